"""Playing the cluster in operator tests: what kubelets, Karpenter and controllers would report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import kmock
import yaml

from tests.operator.kube_emulator import KubeEmulator

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
WS_PATH = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces"
MERGE = "application/merge-patch+json"


async def send(
    kube: KubeEmulator,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = MERGE,
    token: str | None = None,
) -> tuple[int, Any]:
    """One request as the test's admin (or as the holder of ``token``): the status and the body."""
    headers = {"Content-Type": content_type if method == "PATCH" else "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with kube.request(method, path, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def call(
    kube: KubeEmulator, method: str, path: str, body: Any = None, content_type: str = MERGE
) -> Any:
    status, data = await send(kube, method, path, body, content_type)
    if status >= 400:
        raise AssertionError(f"{method} {path}: {status} {data}")
    return data


async def eventually(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    timeout: float = 15.0,  # noqa: ASYNC109
) -> T:
    """Poll ``check`` until it returns something truthy (the emulator keeps serving meanwhile)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached within {timeout}s (last: {last!r})")


def live(kube: KubeEmulator, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    wanted = kmock.resource(resource)
    for (res, ns, obj_name), obj in kube.objects.items():
        if ns == namespace and obj_name == name and res == wanted and not obj.deleted:
            return obj.raw
    return None


def objects(kube: KubeEmulator, resource: str) -> list[dict[str, Any]]:
    wanted = kmock.resource(resource)
    return [obj.raw for (res, _, _), obj in kube.objects.items() if res == wanted and not obj.deleted]


def condition(workspace: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((workspace or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return data


async def apply(kube: KubeEmulator, workspace: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    result: dict[str, Any] = await call(kube, "POST", WS_PATH.format(ns=namespace), workspace)
    return result


async def add_node(
    kube: KubeEmulator, name: str, labels: dict[str, str], *, gpus: int = 1, ready: bool = True
) -> None:
    await call(kube, "POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": labels}})
    status = {
        "capacity": {"nvidia.com/gpu": str(gpus), "cpu": "40", "memory": "320Gi"},
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    await call(kube, "PATCH", f"/api/v1/nodes/{name}/status", {"status": status})


async def launch_nodeclaims(kube: KubeEmulator, *, gpus: int = 1) -> list[str]:
    """What Karpenter does: a Node for each NodeClaim, then the claim Ready with its nodeName."""
    names = []
    for claim in objects(kube, "karpenter.sh/v1/nodeclaims"):
        name = claim["metadata"]["name"]
        if (claim.get("status") or {}).get("nodeName"):
            continue
        node = f"aks-{name}"
        labels = dict(claim["metadata"].get("labels") or {})
        await add_node(kube, node, labels, gpus=gpus)
        status = {"nodeName": node, "conditions": [{"type": "Ready", "status": "True"}]}
        await call(kube, "PATCH", f"/apis/karpenter.sh/v1/nodeclaims/{name}/status", {"status": status})
        names.append(node)
    return names


async def run_pods(
    kube: KubeEmulator, workspace: str, *, replicas: int = 1, ready: bool = True, ns: str = "default"
) -> None:
    """What the StatefulSet controller and kubelet do: pods ws-0..N, Running and (not) Ready."""
    for i in range(replicas):
        name = f"{workspace}-{i}"
        if live(kube, "v1/pods", ns, name) is None:
            pod = {
                "metadata": {"name": name, "labels": {"kaito.sh/workspace": workspace}},
                "spec": {"containers": []},
            }
            await call(kube, "POST", f"/api/v1/namespaces/{ns}/pods", pod)
        await set_pod_status(kube, name, ready=ready, ns=ns)
    status = {"replicas": replicas, "readyReplicas": replicas if ready else 0}
    await call(
        kube, "PATCH", f"/apis/apps/v1/namespaces/{ns}/statefulsets/{workspace}/status", {"status": status}
    )


async def set_pod_status(
    kube: KubeEmulator,
    name: str,
    *,
    ready: bool,
    container: dict[str, Any] | None = None,
    ns: str = "default",
) -> None:
    flag = "True" if ready else "False"
    container_status = container or {"name": "inference", "ready": ready, "state": {"running": {}}}
    status = {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": flag}],
        "containerStatuses": [container_status],
    }
    await call(kube, "PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status})
