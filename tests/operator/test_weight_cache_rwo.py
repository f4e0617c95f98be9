"""The weight cache on a storage class without ReadWriteMany: each inference pod fills its own volume.

The test plays the StatefulSet controller (a claim per pod from the volumeClaimTemplate, owned by the
StatefulSet as its retention policy asks) and the kubelet (the init container's log and its end).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator import chart
from tests.operator.cluster import apply, call, condition, eventually, example, live, objects, run_pods
from tests.operator.conftest import emulated_cluster, running_operator
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_weight_cache import (
    GIB,
    JOBS,
    PHI_CACHE,
    PVCS,
    SEED,
    STS,
    WAIT,
    WS_PATH,
    nodes_up,
    ws,
)

pytestmark = pytest.mark.timeout(240)

CLAIM = f"weight-cache-pod-{SEED}-0"
POD = f"{SEED}-0"


@pytest.fixture
async def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeEmulator]:
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_ENABLED", "true")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_STORAGE_CLASS", "managed-csi")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_ACCESS_MODE", "ReadWriteOnce")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE", "1s")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_GC_INTERVAL_SECONDS", "0.3")
    values = ("replicas=1", "weightCache.enabled=true", "weightCache.accessMode=ReadWriteOnce")
    async with emulated_cluster(tmp_path, monkeypatch, *values) as emulator, running_operator(emulator):
        yield emulator


def mirror(kube: KubeEmulator) -> dict[str, Any]:
    return condition(ws(kube, SEED), "ModelMirrorReady")


async def start_pod(kube: KubeEmulator, sts: dict[str, Any]) -> None:
    """The StatefulSet controller: the pod's claim (kept when it exists), then the pod. The claim is
    left unowned, as on a cluster that does not honour the retention policy (before Kubernetes
    1.27): the operator removes it with the Workspace itself."""
    (template,) = sts["spec"]["volumeClaimTemplates"]
    if live(kube, PVCS, "default", CLAIM) is None:
        claim = {"metadata": {**template["metadata"], "name": CLAIM}, "spec": template["spec"]}
        await call(kube, "POST", "/api/v1/namespaces/default/persistentvolumeclaims", claim)
    spec = {**sts["spec"]["template"]["spec"]}
    spec["volumes"] = [
        *spec["volumes"],
        {"name": "weight-cache-pod", "persistentVolumeClaim": {"claimName": CLAIM}},
    ]
    pod = {"metadata": {"name": POD, **sts["spec"]["template"]["metadata"]}, "spec": spec}
    await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)


async def init_status(kube: KubeEmulator, *, log: str = "", terminated: dict[str, Any] | None = None) -> None:
    """The kubelet: the init container running (its log) or ended."""
    kube.pod_logs[("default", POD)] = log
    state = {"terminated": terminated} if terminated else {"running": {}}
    status = {
        "phase": "Pending",
        "initContainerStatuses": [{"name": "weight-cache", "ready": False, "state": state}],
    }
    await call(kube, "PATCH", f"/api/v1/namespaces/default/pods/{POD}/status", {"status": status})


async def test_each_pod_fills_its_own_volume_once_and_it_goes_with_the_workspace(kube: KubeEmulator) -> None:
    body = example(f"{SEED}.yaml")
    body["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    await apply(kube, body)
    await nodes_up(kube)
    # no shared cache, no Job to wait for: the StatefulSet carries the cache, one volume per pod
    sts = await eventually(lambda: live(kube, STS, "default", SEED), WAIT)
    assert live(kube, PVCS, "default", PHI_CACHE) is None and not objects(kube, JOBS)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "managed-csi"
    assert claim["metadata"]["labels"]["kaito.sh/weight-cache-of"] == PHI_CACHE
    assert claim["metadata"]["labels"]["kaito.sh/workspace"] == SEED
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    (fill,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert fill["name"] == "weight-cache" and "--revision" in fill["command"]
    pending = await eventually(
        lambda: mirror(kube).get("reason") == "ModelMirrorPending" and mirror(kube), WAIT
    )
    assert "0/1 pods have the weights" in pending["message"]

    await start_pod(kube, sts)
    log = "\n".join(json.dumps({"done": d * GIB, "total": 8 * GIB}) for d in (0, 2))
    await init_status(kube, log=log)
    await eventually(
        lambda: f"pod {POD} is downloading: 2.00 GiB of 8.00 GiB (25%)" in mirror(kube).get("message", ""),
        WAIT,
    )
    assert ws(kube, SEED)["status"]["state"] != "Ready"

    result = {"ok": True, "commit": "c" * 40, "bytes": 8 * GIB, "files": 9}
    await init_status(kube, terminated={"exitCode": 0, "message": json.dumps(result)})
    await run_pods(kube, SEED)
    await eventually(lambda: mirror(kube).get("status") == "True", WAIT)
    await eventually(lambda: ws(kube, SEED).get("status", {}).get("state") == "Ready", WAIT)
    assert "1/1 filled" in mirror(kube)["message"]
    volume = live(kube, PVCS, "default", CLAIM)
    assert volume is not None

    # the pod is lost and made again: the same claim, the init container finds the volume full
    await call(kube, "DELETE", f"/api/v1/namespaces/default/pods/{POD}")
    await start_pod(kube, live(kube, STS, "default", SEED) or {})
    again = {"ok": True, "commit": "c" * 40, "bytes": 8 * GIB, "files": 9, "downloaded": 0}
    await init_status(kube, terminated={"exitCode": 0, "message": json.dumps(again)})
    await run_pods(kube, SEED)
    await eventually(lambda: ws(kube, SEED).get("status", {}).get("state") == "Ready", WAIT)
    assert mirror(kube)["status"] == "True"
    kept = live(kube, PVCS, "default", CLAIM)
    assert kept is not None and kept["metadata"]["uid"] == volume["metadata"]["uid"]
    assert len(objects(kube, PVCS)) == 1 and not objects(kube, JOBS)  # never a shared cache nor a Job

    # the sweeps leave a pod's own volume alone, in use or not: it goes with its StatefulSet
    user = chart.operator_user(kube.manifests)

    def sweeps() -> int:
        return sum(
            1
            for a in kube.audit
            if a.user == user.name and a.resource == "persistentvolumeclaims" and a.verb == "list"
        )

    before = sweeps()
    await eventually(lambda: sweeps() >= before + 3, WAIT)
    assert "kaito.sh/weight-cache-unused-since" not in (live(kube, PVCS, "default", CLAIM) or {})[
        "metadata"
    ].get("annotations", {})
    await call(kube, "DELETE", f"{WS_PATH}/{SEED}")
    await eventually(lambda: live(kube, STS, "default", SEED) is None, WAIT)
    await eventually(lambda: live(kube, PVCS, "default", CLAIM) is None, WAIT)
    assert kube.denied(user) == []


async def test_a_refused_download_in_the_init_container_is_reported(kube: KubeEmulator) -> None:
    body = example(f"{SEED}.yaml")
    body["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    await apply(kube, body)
    await nodes_up(kube)
    sts = await eventually(lambda: live(kube, STS, "default", SEED), WAIT)
    await start_pod(kube, sts)
    message = "there is no space left on the cache volume: 3.1 GiB free, 8.0 GiB needed"
    result = {"ok": False, "reason": "DiskFull", "message": message}
    await init_status(kube, terminated={"exitCode": 1, "message": json.dumps(result)})
    failed = await eventually(
        lambda: mirror(kube).get("reason") == "DownloadDiskFull" and ws(kube, SEED), WAIT
    )
    text = condition(failed, "ModelMirrorReady")["message"]
    assert message in text and f"pod {POD}" in text
    assert failed["status"]["state"] == "Failed"


async def test_a_statefulset_from_before_the_mode_changed_is_made_again(kube: KubeEmulator) -> None:
    """volumeClaimTemplates cannot change in place: a StatefulSet rendered with a shared cache (or
    none) is replaced when the operator now gives each pod its own volume."""
    body = example(f"{SEED}.yaml")
    body["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    await apply(kube, body)
    await nodes_up(kube)
    sts = await eventually(lambda: live(kube, STS, "default", SEED), WAIT)
    old = {k: v for k, v in sts.items() if k != "status"}
    old["spec"] = {k: v for k, v in sts["spec"].items() if k not in CLAIM_FIELDS}
    path = f"/apis/apps/v1/namespaces/default/statefulsets/{SEED}"
    replaced = await call(kube, "PUT", path, old)
    assert "volumeClaimTemplates" not in replaced["spec"]

    def again() -> dict[str, Any] | None:
        now = live(kube, STS, "default", SEED)
        fresh = now is not None and now["metadata"]["uid"] != sts["metadata"]["uid"]
        return now if fresh and now["spec"].get("volumeClaimTemplates") else None

    remade = await eventually(again, WAIT)
    assert remade["spec"]["volumeClaimTemplates"] == sts["spec"]["volumeClaimTemplates"]
    events = [e for e in objects(kube, "v1/events") if e["involvedObject"]["name"] == SEED]
    assert any(e.get("reason") == "ChildReplaced" for e in events)


CLAIM_FIELDS = ("volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy")


@pytest.mark.parametrize(
    ("desired", "actual", "changed"),
    [
        pytest.param({"access": "ReadWriteOnce"}, {"access": "ReadWriteOnce"}, False, id="same"),
        pytest.param({"access": "ReadWriteOnce"}, None, True, id="claims-added"),
        # rendered no more (back to a shared cache): left alone, nothing mounts it, it goes with the Workspace
        pytest.param(None, {"access": "ReadWriteOnce"}, False, id="claims-no-longer-rendered"),
        pytest.param({"access": "ReadWriteOnce"}, {"access": "ReadWriteOncePod"}, True, id="mode"),
        pytest.param(
            {"access": "ReadWriteOnce", "size": "20Gi"}, {"access": "ReadWriteOnce"}, True, id="size"
        ),
        pytest.param(None, None, False, id="no-claims"),
    ],
)
def test_claims_changed(desired: dict[str, str] | None, actual: dict[str, str] | None, changed: bool) -> None:
    from pykaito.operator.children import claims_changed

    def sts(claim: dict[str, str] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"replicas": 1}
        if claim is not None:
            requests = {"storage": claim.get("size", "11Gi")}
            template = {"accessModes": [claim["access"]], "resources": {"requests": requests}}
            # the API server adds defaults (volumeMode, status): they are no change
            live = {**template, "volumeMode": "Filesystem"}
            spec["volumeClaimTemplates"] = [{"metadata": {"name": "weight-cache-pod"}, "spec": live}]
        return {"kind": "StatefulSet", "spec": spec}

    assert claims_changed(sts(desired), sts(actual)) is changed
