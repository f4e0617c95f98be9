"""Upstream behaviours through the real operator: template Workspaces reach Ready, a count below the
need is admitted with a Warning, a partitioned Workspace requests its MIG slice."""

from __future__ import annotations

from typing import Any

from tests.operator.cluster import (
    add_node,
    apply,
    call,
    condition,
    eventually,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
)
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES, KubeEmulator

STATEFULSETS = "apps/v1/statefulsets"


def workspace(kube: KubeEmulator, name: str) -> dict[str, Any] | None:
    return live(kube, WORKSPACES, "default", name)


def is_true(kube: KubeEmulator, kind: str, name: str) -> bool:
    return condition(workspace(kube, name), kind).get("status") == "True"


def template_workspace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"count": 2, "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.example/my-llm-server:1.0",
                            "ports": [{"containerPort": 5000}],
                        }
                    ]
                }
            }
        },
    }


async def test_template_workspace_runs_its_pod_template_and_goes_ready(
    kube: KubeEmulator, operator: Any
) -> None:
    name = "my-own-server"
    await apply(kube, template_workspace(name))
    for i in range(2):
        await add_node(kube, f"own-{i}", {"apps": name}, gpus=0)
    sts = await eventually(lambda: live(kube, STATEFULSETS, "default", name))
    assert sts["spec"]["replicas"] == 2
    template = sts["spec"]["template"]
    assert template["metadata"]["labels"]["kaito.sh/workspace"] == name
    assert [c["image"] for c in template["spec"]["containers"]] == ["registry.example/my-llm-server:1.0"]
    assert live(kube, "v1/services", "default", name) is not None
    await run_pods(kube, name, replicas=2)
    ws = await eventually(lambda: is_true(kube, "WorkspaceSucceeded", name) and workspace(kube, name))
    assert ws["status"]["state"] == "Ready"
    assert condition(ws, "InferenceReady")["reason"] == "WorkspaceInferenceStatusSuccess"
    assert condition(ws, "NodeClaimReady") == {}  # own nodes: no NodeClaimReady, as upstream
    assert objects(kube, NODECLAIMS) == []


async def test_count_below_the_need_is_admitted_with_a_warning_and_the_planned_nodes(
    kube: KubeEmulator, operator: Any
) -> None:
    name = "llama-70b-count-1"
    ws = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {
            "count": 1,
            "instanceType": "Standard_NC48ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {
            "preset": {"name": "llama-3.3-70b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}
        },
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "data": {"HF_TOKEN": "eA=="}}
    await call(kube, "POST", "/api/v1/namespaces/default/secrets", secret)
    await apply(kube, ws)
    warning = await eventually(
        lambda: next(
            (
                e
                for e in objects(kube, "v1/events")
                if e["involvedObject"]["name"] == name and e.get("reason") == "PlanAdjusted"
            ),
            None,
        )
    )
    assert warning["type"] == "Warning"
    assert "resource.count 1 is below what llama-3.3-70b-instruct needs" in warning["message"]
    claims = await eventually(lambda: len(objects(kube, NODECLAIMS)) == 2 and objects(kube, NODECLAIMS))
    assert len(claims) == 2
    await launch_nodeclaims(kube, gpus=2)
    sts = await eventually(lambda: live(kube, STATEFULSETS, "default", name))
    assert sts["spec"]["replicas"] == 2
    assert workspace(kube, name)["status"]["targetNodeCount"] == 2  # type: ignore[index]


async def test_mig_workspace_on_own_node_requests_its_slice_and_goes_ready(
    kube: KubeEmulator, operator: Any
) -> None:
    name = "phi-4-mini-mig"
    ws = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {
            "labelSelector": {"matchLabels": {"apps": name}},
            "partition": {"mode": "mig", "profile": "2g.24gb"},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    labels = {"apps": name, "nvidia.com/gpu.product": "NVIDIA-H100-NVL", "nvidia.com/gpu.count": "1"}
    await call(kube, "POST", "/api/v1/nodes", {"metadata": {"name": "mig-node", "labels": labels}})
    status = {
        "capacity": {"nvidia.com/mig-2g.24gb": "3", "cpu": "40", "memory": "320Gi"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    await call(kube, "PATCH", "/api/v1/nodes/mig-node/status", {"status": status})
    await apply(kube, ws)
    sts = await eventually(lambda: live(kube, STATEFULSETS, "default", name))
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/mig-2g.24gb": "1"}
    await run_pods(kube, name)
    done = await eventually(lambda: is_true(kube, "WorkspaceSucceeded", name) and workspace(kube, name))
    assert done["status"]["workerNodes"] == ["mig-node"]
    assert objects(kube, NODECLAIMS) == []
