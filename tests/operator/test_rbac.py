"""The real operator under the Helm chart's rules: its RBAC (as its ServiceAccount) and its webhook.

The emulator refuses whatever the chart's ClusterRole does not grant and sends every Workspace write
through the operator's own webhook, so a missing verb, a read the chart should not allow, or a
webhook that blocks a deletion fails here as it would on a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.operator import chart
from tests.operator.cluster import (
    ROOT,
    add_node,
    apply,
    call,
    condition,
    eventually,
    example,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
    send,
)
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES, KubeEmulator
from tests.operator.scale_subresource import INFERENCESETS
from tests.operator.test_inferenceset import NAME as SET_NAME
from tests.operator.test_inferenceset import SET, SETS_PATH, play_cluster

SEED = "workspace-phi-4-mini-h100"
GATED = "workspace-llama-3-3-70b"
BYO = "workspace-phi-4-mini-byo"
CPU = "workspace-smollm2-cpu"
WS_PATH = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces"


def succeeded(kube: KubeEmulator, name: str, ns: str = "default") -> dict[str, Any] | None:
    ws = live(kube, WORKSPACES, ns, name)
    return ws if condition(ws, "WorkspaceSucceeded").get("status") == "True" else None


def finalizers(kube: KubeEmulator, name: str, ns: str = "default") -> list[str]:
    return list(((live(kube, WORKSPACES, ns, name) or {}).get("metadata") or {}).get("finalizers") or [])


async def model_access(kube: KubeEmulator, ns: str) -> dict[str, Any]:
    """The gated example with its Secret (HF_TOKEN) and an inference ConfigMap, created in ``ns``."""
    secret = {"metadata": {"name": "hf-token"}, "stringData": {"HF_TOKEN": "hf_not_a_real_token"}}
    await call(kube, "POST", f"/api/v1/namespaces/{ns}/secrets", secret)
    config_map, _ = yaml.safe_load_all((ROOT / "examples" / "workspace-configmap-override.yaml").read_text())
    config_map["data"]["inference_config.yaml"] = "vllm:\n  max-model-len: 8192\n"
    await call(kube, "POST", f"/api/v1/namespaces/{ns}/configmaps", config_map)
    ws = example("workspace-llama-3.3-70b.yaml")
    ws["inference"]["config"] = config_map["metadata"]["name"]
    return await apply(kube, ws, ns)


async def bring_up(kube: KubeEmulator, name: str, ns: str = "default", *, gpus: int = 1) -> None:
    """Play Karpenter and the StatefulSet controller until the Workspace succeeds."""

    async def provisioned() -> bool:
        await launch_nodeclaims(kube, gpus=gpus)
        return live(kube, "apps/v1/statefulsets", ns, name) is not None

    await eventually(provisioned, timeout=30)
    sts = live(kube, "apps/v1/statefulsets", ns, name)
    assert sts is not None
    await run_pods(kube, name, replicas=int(sts["spec"]["replicas"]), ns=ns)
    await eventually(lambda: succeeded(kube, name, ns), timeout=30)


async def test_operator_converges_under_the_charts_rbac_and_uses_every_grant(
    kube: KubeEmulator, operator: Any
) -> None:
    user = chart.operator_user(kube.manifests)
    kube.fail_next("POST", r"/nodeclaims$", 409)  # a NodeClaim create that raced another writer

    await apply(kube, example(f"{SEED}.yaml"))
    await bring_up(kube, SEED)
    path = f"/apis/apps/v1/namespaces/default/statefulsets/{SEED}"
    await call(kube, "PATCH", path, {"spec": {"replicas": 3}})  # edited by hand: restored
    await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", SEED)["spec"]["replicas"] == 1)  # type: ignore[index]

    service = f"/api/v1/namespaces/default/services/{SEED}"
    ports = live(kube, "v1/services", "default", SEED)["spec"]["ports"]  # type: ignore[index]
    await call(kube, "PATCH", service, {"spec": {"ports": [{**ports[0], "port": 8080}]}})
    await eventually(lambda: live(kube, "v1/services", "default", SEED)["spec"]["ports"] == ports)  # type: ignore[index]

    await model_access(kube, "default")  # names a Secret and a ConfigMap
    await bring_up(kube, GATED, gpus=8)

    await apply(kube, example("workspace-byo-nodes.yaml"))
    gpu = {
        "apps": "phi-4-byo",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.count": "1",
    }
    await add_node(kube, "gpu-node-1", {**gpu, "nvidia.com/gpu.memory": "81920"})
    await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", BYO), timeout=30)
    await run_pods(kube, BYO)
    await eventually(lambda: succeeded(kube, BYO), timeout=30)

    await apply(kube, example("workspace-cpu-smollm2.yaml"))
    await add_node(kube, "cpu-node-1", {"kubernetes.io/os": "linux"}, gpus=0)
    await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", CPU), timeout=30)
    await run_pods(kube, CPU)
    ws = await eventually(lambda: succeeded(kube, CPU), timeout=30)
    assert ws["status"]["workerNodes"] == ["cpu-node-1"]

    # an InferenceSet of one replica: its replica Workspace and Service made, then all deleted
    one = copy.deepcopy(SET)
    one["spec"]["replicas"] = 1
    await call(kube, "POST", SETS_PATH, one)

    async def set_ready() -> bool:
        await play_cluster(kube)
        return (
            condition(live(kube, INFERENCESETS, "default", SET_NAME), "InferenceSetReady").get("status")
            == "True"
        )

    await eventually(set_ready, timeout=60)
    await call(kube, "DELETE", f"{SETS_PATH}/{SET_NAME}")
    await eventually(lambda: live(kube, INFERENCESETS, "default", SET_NAME) is None, timeout=30)

    for name in (SEED, GATED, BYO, CPU):
        await call(kube, "DELETE", f"{WS_PATH.format(ns='default')}/{name}")
    await eventually(lambda: not objects(kube, WORKSPACES), timeout=30)
    assert objects(kube, NODECLAIMS) == []
    assert objects(kube, "apps/v1/statefulsets") == [] and objects(kube, "v1/services") == []  # collected

    assert kube.denied(user) == []
    used = {(a.group, a.resource, a.verb) for a in kube.audit if a.user == user.name}
    assert kube.authorizer is not None
    unused = kube.authorizer.granted(user) - used
    assert not unused, f"the chart grants what the operator never uses: {sorted(unused)}"
    assert ("", "secrets", "get") in used and ("", "secrets", "list") not in used
    reviewed = {(r.operation, r.name) for r in kube.admission.reviews}
    assert {("CREATE", n) for n in (SEED, GATED, BYO, CPU)} <= reviewed


async def test_namespace_teardown_with_the_secret_deleted_first_still_deletes_the_workspace(
    kube: KubeEmulator, operator: Any
) -> None:
    await call(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "team-a"}})
    await model_access(kube, "team-a")
    await bring_up(kube, GATED, "team-a", gpus=8)
    assert objects(kube, NODECLAIMS)

    await call(kube, "DELETE", "/api/v1/namespaces/team-a")  # Secrets and ConfigMaps go first
    await eventually(lambda: live(kube, "v1/namespaces", None, "team-a") is None, timeout=30)
    assert live(kube, WORKSPACES, "team-a", GATED) is None
    assert objects(kube, NODECLAIMS) == []
    finalizer_removal = [
        r
        for r in kube.admission.reviews
        if r.operation == "UPDATE" and r.obj and r.obj["metadata"].get("deletionTimestamp")
    ]
    assert finalizer_removal, "the webhook saw no write to the Workspace while it was deleted"
    assert kube.denied(chart.operator_user(kube.manifests)) == []


async def test_webhook_reads_the_cluster_on_create_and_spec_changes_only(
    kube: KubeEmulator, operator: Any
) -> None:
    path = WS_PATH.format(ns="default")
    gated = example("workspace-llama-3.3-70b.yaml")
    status, answer = await send(kube, "POST", path, gated)
    assert status == 422 and "hf-token" in answer["message"]  # the Secret it names is missing
    await model_access(kube, "default")
    await call(kube, "DELETE", "/api/v1/namespaces/default/secrets/hf-token")

    metadata_only = {"metadata": {"labels": {"team": "a"}, "annotations": {"example.com/note": "x"}}}
    assert (await send(kube, "PATCH", f"{path}/{GATED}", metadata_only))[0] == 200
    config = {"metadata": {"name": "other-config"}, "data": {"inference_config.yaml": "vllm: {}\n"}}
    await call(kube, "POST", "/api/v1/namespaces/default/configmaps", config)
    status, answer = await send(kube, "PATCH", f"{path}/{GATED}", {"inference": {"config": "other-config"}})
    assert status == 422 and "hf-token" in answer["message"]

    await eventually(lambda: "workspace.finalizer.kaito.sh" in finalizers(kube, GATED))
    await call(kube, "DELETE", f"{path}/{GATED}")  # the operator removes its finalizer: not refused
    await eventually(lambda: live(kube, WORKSPACES, "default", GATED) is None, timeout=30)
    assert any(
        r.operation == "UPDATE" and r.obj and r.obj["metadata"].get("deletionTimestamp")
        for r in kube.admission.reviews
    )
