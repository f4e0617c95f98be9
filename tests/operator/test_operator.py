"""The real operator (kopf, in a thread) against the Kubernetes emulator; the tests play the cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.operator.cluster import (
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
    set_pod_status,
)
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES, KubeEmulator

SEED = "workspace-phi-4-mini-h100"


def workspace(kube: KubeEmulator, name: str = SEED) -> dict[str, Any] | None:
    return live(kube, WORKSPACES, "default", name)


def is_true(kube: KubeEmulator, kind: str, name: str = SEED) -> bool:
    return condition(workspace(kube, name), kind).get("status") == "True"


def event_reasons(kube: KubeEmulator, name: str = SEED) -> set[str]:
    return {e.get("reason", "") for e in objects(kube, "v1/events") if e["involvedObject"]["name"] == name}


async def bring_up_seed(kube: KubeEmulator) -> None:
    await apply(kube, example(f"{SEED}.yaml"))
    await eventually(lambda: objects(kube, NODECLAIMS))
    await launch_nodeclaims(kube)
    await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", SEED))
    await run_pods(kube, SEED)
    await eventually(lambda: is_true(kube, "WorkspaceSucceeded"))


async def test_seed_workspace_goes_ready_with_nodeclaims_statefulset_and_services(
    kube: KubeEmulator, operator: Any
) -> None:
    await apply(kube, example(f"{SEED}.yaml"))

    claims = await eventually(lambda: objects(kube, NODECLAIMS))
    assert len(claims) == 1
    claim = claims[0]
    assert claim["metadata"]["labels"]["kaito.sh/workspace"] == SEED
    assert claim["metadata"]["labels"]["kaito.sh/workspacenamespace"] == "default"
    requirement = claim["spec"]["requirements"][0]
    assert requirement["values"] == ["Standard_NC40ads_H100_v5"]
    ws = await eventually(
        lambda: condition(workspace(kube), "NodeClaimReady").get("status") == "False" and workspace(kube)
    )
    assert ws["status"]["targetNodeCount"] == 1
    assert ws["status"]["state"] == "Pending"
    assert "workspace.finalizer.kaito.sh" in ws["metadata"]["finalizers"]
    assert live(kube, "apps/v1/statefulsets", "default", SEED) is None  # no children before nodes

    await launch_nodeclaims(kube)
    sts = await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", SEED))
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == f"{SEED}-headless"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    service = await eventually(lambda: live(kube, "v1/services", "default", SEED))
    assert service["spec"]["ports"][0]["port"] == 80
    headless = await eventually(lambda: live(kube, "v1/services", "default", f"{SEED}-headless"))
    assert headless["spec"]["clusterIP"] == "None"
    ws = await eventually(lambda: is_true(kube, "ResourceReady") and workspace(kube))
    assert condition(ws, "InferenceReady")["status"] == "False"
    assert ws["status"]["state"] == "NotReady"

    await run_pods(kube, SEED, ready=False)
    await set_pod_status(kube, f"{SEED}-0", ready=False)
    ws = await eventually(
        lambda: (
            condition(workspace(kube), "InferenceReady").get("reason") == "PodsNotReady" and workspace(kube)
        )
    )
    assert ws["status"]["state"] == "NotReady"

    await run_pods(kube, SEED, ready=True)
    ws = await eventually(lambda: is_true(kube, "WorkspaceSucceeded") and workspace(kube))
    assert ws["status"]["state"] == "Ready"
    assert [c["status"] for c in ws["status"]["conditions"]] == ["True"] * 5
    assert ws["status"]["workerNodes"] == [f"aks-{claim['metadata']['name']}"]
    assert len(objects(kube, NODECLAIMS)) == 1
    assert len(objects(kube, "apps/v1/statefulsets")) == 1
    await eventually(lambda: {"NodeClaimCreated", "ChildCreated", "StateReady"} <= event_reasons(kube))


async def test_bring_your_own_nodes_run_without_nodeclaims(
    kube: KubeEmulator, operator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITO_OPERATOR_RUNTIME_IMAGE_VLLM", "registry.example/runtime-vllm:test")
    async with operator_factory():
        await _bring_your_own_nodes(kube)


async def _bring_your_own_nodes(kube: KubeEmulator) -> None:
    name = "workspace-phi-4-mini-byo"
    await apply(kube, example("workspace-byo-nodes.yaml"))
    ws = await eventually(
        lambda: (
            condition(workspace(kube, name), "NodesReady").get("status") == "False" and workspace(kube, name)
        )
    )
    assert condition(ws, "NodeClaimReady") == {}  # as upstream: none for bring-your-own nodes
    assert live(kube, "apps/v1/statefulsets", "default", name) is None

    gpu_labels = {
        "apps": "phi-4-byo",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.memory": "81920",
    }
    await add_node(kube, "gpu-node-1", gpu_labels)
    await add_node(kube, "cpu-node", {"apps": "something-else"})
    sts = await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", name))
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/runtime-vllm:test"
    await run_pods(kube, name)
    ws = await eventually(lambda: is_true(kube, "WorkspaceSucceeded", name) and workspace(kube, name))
    assert ws["status"]["workerNodes"] == ["gpu-node-1"]
    assert objects(kube, NODECLAIMS) == []


async def refused(kube: KubeEmulator, method: str, path: str, body: Any) -> dict[str, Any]:
    """The Status a write is refused with (the test fails when it is accepted)."""
    headers = {"Content-Type": "application/merge-patch+json"}
    async with kube.request(method, path, json=body, headers=headers) as response:
        status: dict[str, Any] = await response.json(content_type=None)
        assert response.status >= 400, f"{method} {path} was accepted"
        return status


async def test_invalid_workspace_gets_condition_and_event_and_no_children(
    kube: KubeEmulator, operator: Any
) -> None:
    bad = example(f"{SEED}.yaml")
    bad["metadata"]["name"] = "bad"
    bad["inference"]["preset"]["name"] = "phi-5-giant"
    status = await refused(kube, "POST", "/apis/kaito.sh/v1beta1/namespaces/default/workspaces", bad)
    assert status["code"] == 422
    assert "inference.preset.name" in status["message"] and "phi-5-giant" in status["message"]
    assert workspace(kube, "bad") is None

    kube.admission.webhooks.clear()  # a cluster where the webhook is not registered: the operator refuses it
    await apply(kube, bad)
    await apply(kube, example(f"{SEED}.yaml"))  # a valid one alongside is not blocked

    ws = await eventually(
        lambda: (
            condition(workspace(kube, "bad"), "InferenceReady").get("reason") == "InvalidWorkspace"
            and workspace(kube, "bad")
        )
    )
    inference = condition(ws, "InferenceReady")
    assert inference["status"] == "False"
    assert "inference.preset.name" in inference["message"]
    assert "phi-5-giant" in inference["message"]
    assert ws["status"]["state"] == "Failed"
    warnings = await eventually(
        lambda: [
            e
            for e in objects(kube, "v1/events")
            if e["involvedObject"]["name"] == "bad" and e["type"] == "Warning"
        ]
    )
    assert warnings[0]["reason"] == "InvalidWorkspace"
    await asyncio.sleep(0.5)  # events are posted in the background: no second one comes
    bad_warnings = [e for e in objects(kube, "v1/events") if e["involvedObject"]["name"] == "bad"]
    assert [e["type"] for e in bad_warnings] == ["Warning"]
    await eventually(lambda: len(objects(kube, NODECLAIMS)) == 1)  # only the valid one's
    assert all(c["metadata"]["labels"]["kaito.sh/workspace"] == SEED for c in objects(kube, NODECLAIMS))
    assert live(kube, "v1/services", "default", "bad") is None
    assert live(kube, "apps/v1/statefulsets", "default", "bad") is None


async def test_oom_killed_pod_turns_inference_ready_false(kube: KubeEmulator, operator: Any) -> None:
    await bring_up_seed(kube)
    oom = {
        "name": "inference",
        "ready": False,
        "restartCount": 1,
        "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
        },
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
    }
    await set_pod_status(kube, f"{SEED}-0", ready=False, container=oom)
    ws = await eventually(
        lambda: condition(workspace(kube), "InferenceReady").get("status") == "False" and workspace(kube)
    )
    inference = condition(ws, "InferenceReady")
    assert inference["reason"] == "ContainerOOMKilled"
    assert "OOMKilled" in inference["message"]
    assert ws["status"]["state"] == "Failed"
    assert condition(ws, "ResourceReady")["status"] == "True"
    await eventually(
        lambda: any(
            e["reason"] == "ContainerOOMKilled" and e["type"] == "Warning" for e in objects(kube, "v1/events")
        )
    )

    await set_pod_status(kube, f"{SEED}-0", ready=True)
    ws = await eventually(lambda: is_true(kube, "InferenceReady") and workspace(kube))
    assert ws["status"]["state"] == "Ready"


async def test_child_deleted_or_edited_by_hand_is_restored(kube: KubeEmulator, operator: Any) -> None:
    await bring_up_seed(kube)
    before = live(kube, "v1/services", "default", SEED)
    assert before is not None
    await call(kube, "DELETE", f"/api/v1/namespaces/default/services/{SEED}")
    restored = await eventually(lambda: live(kube, "v1/services", "default", SEED))
    assert restored["metadata"]["uid"] != before["metadata"]["uid"]
    assert restored["spec"]["ports"] == before["spec"]["ports"]

    path = f"/apis/apps/v1/namespaces/default/statefulsets/{SEED}"
    await call(kube, "PATCH", path, {"spec": {"replicas": 3}})
    sts = await eventually(
        lambda: (
            (s := live(kube, "apps/v1/statefulsets", "default", SEED)) and s["spec"]["replicas"] == 1 and s
        )
    )
    assert sts["metadata"]["generation"] == 3  # edited, then restored
    assert len(objects(kube, "apps/v1/statefulsets")) == 1


async def test_delete_removes_nodeclaims_and_finalizer(kube: KubeEmulator, operator: Any) -> None:
    await bring_up_seed(kube)
    assert len(objects(kube, NODECLAIMS)) == 1
    await call(kube, "DELETE", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}")
    await eventually(lambda: workspace(kube) is None)
    assert objects(kube, NODECLAIMS) == []
    await eventually(lambda: "NodeClaimsDeleted" in event_reasons(kube))


async def test_delete_without_nodeclaim_crd_is_not_stuck(
    kube_without_nodeclaims: KubeEmulator, operator_factory: Any
) -> None:
    kube = kube_without_nodeclaims
    async with operator_factory():
        await apply(kube, example(f"{SEED}.yaml"))
        ws = await eventually(
            lambda: (
                condition(workspace(kube), "NodeClaimReady").get("reason") == "NodeClaimCRDMissing"
                and workspace(kube)
            )
        )
        assert ws["status"]["state"] == "Pending"
        assert "karpenter.sh" in condition(ws, "NodeClaimReady")["message"]
        await call(kube, "DELETE", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}")
        await eventually(lambda: workspace(kube) is None)
        await eventually(lambda: "NodeClaimsSkipped" in event_reasons(kube))


async def test_restarted_operator_creates_no_duplicates_and_converges(
    kube: KubeEmulator, operator_factory: Any
) -> None:
    async with operator_factory():
        await apply(kube, example(f"{SEED}.yaml"))
        await eventually(lambda: objects(kube, NODECLAIMS))
        await eventually(lambda: condition(workspace(kube), "NodeClaimReady").get("status") == "False")
    claims = objects(kube, NODECLAIMS)
    assert len(claims) == 1

    async with operator_factory():
        await launch_nodeclaims(kube)
        await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", SEED))
        await run_pods(kube, SEED)
        await eventually(lambda: is_true(kube, "WorkspaceSucceeded"))
        assert [c["metadata"]["uid"] for c in objects(kube, NODECLAIMS)] == [claims[0]["metadata"]["uid"]]
        assert len(objects(kube, "apps/v1/statefulsets")) == 1
        assert len(objects(kube, "v1/services")) == 2


async def test_conflicts_and_server_errors_are_retried_to_success(kube: KubeEmulator, operator: Any) -> None:
    faults = [
        kube.fail_next("POST", r"/nodeclaims$", 500, count=5),
        kube.fail_next("PATCH", r"/workspaces/[^/]+/status$", 409, count=2),
        kube.fail_next("PATCH", rf"/workspaces/{SEED}$", 500, count=1),
        kube.fail_next("POST", r"/statefulsets$", 500, count=4),
        kube.fail_next("GET", r"/api/v1/nodes/[^/]+$", 503, count=4),
    ]
    await bring_up_seed(kube)
    assert [f.remaining for f in faults] == [0] * len(faults)
    assert len(objects(kube, NODECLAIMS)) == 1
    assert len(objects(kube, "apps/v1/statefulsets")) == 1
    assert workspace(kube)["status"]["state"] == "Ready"  # type: ignore[index]


async def test_an_immutable_field_changed_is_reported_and_reverting_recovers(
    kube: KubeEmulator, operator: Any
) -> None:
    await bring_up_seed(kube)
    handled = (
        "kaito.sh/last-handled-configuration"  # kopf finished the creation (changes after it are updates)
    )
    await eventually(lambda: handled in (workspace(kube) or {}).get("metadata", {}).get("annotations", {}))
    path = f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}"
    change = {"resource": {"instanceType": "Standard_NC80adis_H100_v5"}}
    status = await refused(kube, "PATCH", path, change)
    assert status["code"] == 422 and "resource.instanceType" in status["message"]
    assert workspace(kube)["resource"]["instanceType"] == "Standard_NC40ads_H100_v5"  # type: ignore[index]

    kube.admission.webhooks.clear()  # without the webhook, the operator refuses the change itself
    await call(kube, "PATCH", path, change)
    ws = await eventually(
        lambda: (
            condition(workspace(kube), "ResourceReady").get("reason") == "InvalidWorkspace"
            and workspace(kube)
        )
    )
    assert "resource.instanceType" in condition(ws, "ResourceReady")["message"]
    assert ws["status"]["state"] == "Failed"
    assert len(objects(kube, NODECLAIMS)) == 1  # nothing provisioned for the refused change

    await call(kube, "PATCH", path, {"resource": {"instanceType": "Standard_NC40ads_H100_v5"}})
    ws = await eventually(lambda: is_true(kube, "WorkspaceSucceeded") and workspace(kube))
    assert ws["status"]["state"] == "Ready"
