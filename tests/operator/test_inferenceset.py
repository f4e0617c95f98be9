"""InferenceSets: the real operator against the emulator, the tests playing Karpenter and the kubelet."""

from __future__ import annotations

import copy
from typing import Any

from tests.operator.cluster import (
    call,
    condition,
    eventually,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
    send,
    set_pod_status,
)
from tests.operator.kube_emulator import WORKSPACES, KubeEmulator
from tests.operator.scale_subresource import INFERENCESETS

SETS_PATH = "/apis/kaito.sh/v1beta1/namespaces/default/inferencesets"
NAME = "phi"
SET: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "InferenceSet",
    "metadata": {"name": NAME},
    "spec": {
        "replicas": 3,
        "nodeCountLimit": 5,
        "labelSelector": {"matchLabels": {"apps": NAME}},
        "template": {
            "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    },
}


def the_set(kube: KubeEmulator) -> dict[str, Any] | None:
    return live(kube, INFERENCESETS, "default", NAME)


def children(kube: KubeEmulator) -> list[dict[str, Any]]:
    return sorted(
        (
            w
            for w in objects(kube, WORKSPACES)
            if w["metadata"].get("labels", {}).get("inferenceset.kaito.sh/created-by") == NAME
        ),
        key=lambda w: w["metadata"]["name"],
    )


def child_names(kube: KubeEmulator, *, include_deleting: bool = False) -> list[str]:
    return [
        w["metadata"]["name"]
        for w in children(kube)
        if include_deleting or not w["metadata"].get("deletionTimestamp")
    ]


def set_status(kube: KubeEmulator) -> dict[str, Any]:
    return dict((the_set(kube) or {}).get("status") or {})


async def play_cluster(kube: KubeEmulator) -> None:
    """Karpenter and the kubelet: nodes for every NodeClaim, Ready pods for every replica's StatefulSet."""
    for claim in objects(kube, "karpenter.sh/v1/nodeclaims"):  # a replica made again reuses its claim's name
        name = claim["metadata"]["name"]
        if not (claim.get("status") or {}).get("nodeName") and live(kube, "v1/nodes", None, f"aks-{name}"):
            await call(kube, "DELETE", f"/api/v1/nodes/aks-{name}")
    try:
        await launch_nodeclaims(kube)
    except AssertionError as exc:  # a claim made again since the sweep above: its old node goes next time
        if "409" not in str(exc):
            raise
        return
    for sts in objects(kube, "apps/v1/statefulsets"):
        name = sts["metadata"]["name"]
        if not (sts.get("status") or {}).get("readyReplicas"):
            try:
                await run_pods(kube, name)
            except AssertionError as exc:  # scaled away since the listing: its StatefulSet is gone
                if "404" not in str(exc) or live(kube, "apps/v1/statefulsets", "default", name) is not None:
                    raise


async def ready_with(kube: KubeEmulator, count: int) -> bool:
    await play_cluster(kube)
    status = set_status(kube)
    return (
        status.get("readyReplicas") == count
        and status.get("replicas") == count
        and len(child_names(kube)) == count
        and condition(the_set(kube), "InferenceSetReady").get("status") == "True"
    )


async def scale(kube: KubeEmulator, replicas: int) -> dict[str, Any]:
    result: dict[str, Any] = await call(
        kube, "PATCH", f"{SETS_PATH}/{NAME}/scale", {"spec": {"replicas": replicas}}
    )
    return result


async def test_replicas_go_ready_then_scale_3_1_0_2_through_the_scale_subresource(
    kube: KubeEmulator, operator: Any
) -> None:
    await call(kube, "POST", SETS_PATH, SET)
    await eventually(lambda: ready_with(kube, 3), timeout=60)
    assert child_names(kube) == [f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]
    first = children(kube)[0]
    owner = first["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("InferenceSet", NAME, True)
    assert first["resource"]["labelSelector"] == {"matchLabels": {"apps": NAME}}
    service = live(kube, "v1/services", "default", NAME)
    assert service is not None and service["spec"]["selector"] == {
        "inferenceset.kaito.sh/created-by": NAME,
        "apps.kubernetes.io/pod-index": "0",
    }
    sts = live(kube, "apps/v1/statefulsets", "default", f"{NAME}-0")
    assert sts is not None
    assert sts["spec"]["template"]["metadata"]["labels"]["inferenceset.kaito.sh/created-by"] == NAME

    got = await call(kube, "GET", f"{SETS_PATH}/{NAME}/scale")
    assert got["spec"]["replicas"] == 3 and got["status"] == {
        "replicas": 3,
        "selector": f"inferenceset.kaito.sh/created-by={NAME}",
    }

    # make replica 0 not ready: scaling down removes it first, then the highest index
    await set_pod_status(kube, f"{NAME}-0-0", ready=False)
    await call(
        kube,
        "PATCH",
        "/apis/apps/v1/namespaces/default/statefulsets/phi-0/status",
        {"status": {"replicas": 1, "readyReplicas": 0}},
    )
    await eventually(lambda: set_status(kube).get("readyReplicas") == 2, timeout=30)
    await scale(kube, 1)
    await eventually(lambda: child_names(kube) == [f"{NAME}-1"], timeout=30)
    await eventually(lambda: ready_with(kube, 1), timeout=30)

    await scale(kube, 0)
    await eventually(lambda: child_names(kube, include_deleting=True) == [], timeout=30)
    zero = await eventually(
        lambda: condition(the_set(kube), "ScaledToZero").get("status") == "True" and the_set(kube), timeout=30
    )
    assert "kaito scale phi --replicas N" in condition(zero, "ScaledToZero")["message"]
    assert set_status(kube).get("replicas") == 0

    await scale(kube, 2)
    await eventually(lambda: ready_with(kube, 2), timeout=60)
    assert len(child_names(kube)) == 2


async def test_template_change_rolls_out_without_dropping_below_the_budget(
    kube: KubeEmulator, operator: Any
) -> None:
    await call(kube, "POST", SETS_PATH, SET)
    await eventually(lambda: ready_with(kube, 3), timeout=60)
    old_hash = children(kube)[0]["metadata"]["annotations"]["inferenceset.kaito.sh/template-hash"]

    changed = {
        "spec": {
            "template": {"inference": {"preset": {"name": "phi-4-mini-instruct", "accessMode": "public"}}}
        }
    }
    await call(kube, "PATCH", f"{SETS_PATH}/{NAME}", changed)
    lowest_ready = 3
    seen_names: set[str] = set()

    async def rolled() -> bool:
        nonlocal lowest_ready
        ready = sum(
            1
            for w in children(kube)
            if not w["metadata"].get("deletionTimestamp")
            and condition(w, "InferenceReady").get("status") == "True"
        )
        lowest_ready = min(lowest_ready, ready)
        seen_names.update(child_names(kube))
        await play_cluster(kube)
        hashes = {w["metadata"]["annotations"]["inferenceset.kaito.sh/template-hash"] for w in children(kube)}
        return old_hash not in hashes and await ready_with(kube, 3)

    await eventually(rolled, timeout=90)
    assert lowest_ready >= 3 - 1  # maxUnavailable defaults to 1
    assert len(seen_names) >= 4  # successors came up beside the replicas they replaced


async def test_a_replica_oomkilled_shows_in_the_set_status(kube: KubeEmulator, operator: Any) -> None:
    body = copy.deepcopy(SET)
    body["spec"]["replicas"] = 2
    await call(kube, "POST", SETS_PATH, body)
    await eventually(lambda: ready_with(kube, 2), timeout=60)

    oom = {
        "name": "inference",
        "ready": False,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        "restartCount": 3,
    }
    await set_pod_status(kube, f"{NAME}-1-0", ready=False, container=oom)
    ready = await eventually(
        lambda: (
            "OOMKilled" in condition(the_set(kube), "InferenceSetReady").get("message", "") and the_set(kube)
        ),
        timeout=30,
    )
    verdict = condition(ready, "InferenceSetReady")
    assert verdict["status"] == "False" and verdict["reason"] == "ReplicaFailed"
    assert f"{NAME}-1:" in verdict["message"]
    assert ready["status"]["readyReplicas"] == 1


async def test_deleting_the_set_removes_every_replica_and_its_service(
    kube: KubeEmulator, operator: Any
) -> None:
    body = copy.deepcopy(SET)
    body["spec"]["replicas"] = 2
    await call(kube, "POST", SETS_PATH, body)
    await eventually(lambda: ready_with(kube, 2), timeout=60)

    await call(kube, "DELETE", f"{SETS_PATH}/{NAME}")
    await eventually(lambda: the_set(kube) is None, timeout=60)
    assert child_names(kube, include_deleting=True) == []
    assert live(kube, "v1/services", "default", NAME) is None
    assert objects(kube, "karpenter.sh/v1/nodeclaims") == []


async def test_an_invalid_set_is_reported_in_its_status(kube: KubeEmulator, operator: Any) -> None:
    body = copy.deepcopy(SET)
    body["spec"]["replicas"] = 6  # 6 x 1 node > nodeCountLimit 5
    code, refusal = await send(kube, "POST", SETS_PATH, body)
    assert code == 422 and "nodeCountLimit 5" in refusal["message"]  # the webhook refuses it at the API
    kube.admission.webhooks.clear()  # a cluster where the webhook is not registered: the operator refuses it
    await call(kube, "POST", SETS_PATH, body)
    verdict = await eventually(lambda: condition(the_set(kube), "InferenceSetReady"), timeout=30)
    assert verdict["reason"] == "InvalidInferenceSet"
    assert "nodeCountLimit 5" in verdict["message"] and "at most 5" in verdict["message"]
    assert children(kube) == []
