"""A pod of a Workspace on the weight cache, lost and recreated: it reads the cache, nothing downloads.

The test plays the StatefulSet controller and the kubelet: a node failure or an eviction deletes the
inference pod, the controller creates it again from the StatefulSet's template.
"""

from __future__ import annotations

import json

import pytest

from pykaito.manifests.weight_cache import download_job_name
from tests.operator.cluster import apply, call, condition, eventually, example, live, objects, run_pods
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_weight_cache import (
    GIB,
    JOBS,
    PHI_CACHE,
    PVCS,
    SEED,
    STS,
    WAIT,
    cache_jobs,
    finish_download,
    mirror,
    nodes_up,
    ws,
)
from tests.operator.test_weight_cache import kube as kube  # the fixture: operator, chart RBAC, cache on

pytestmark = pytest.mark.timeout(240)


def started_downloads(kube: KubeEmulator) -> int:
    events = objects(kube, "v1/events")
    return sum(
        e.get("reason") == "WeightDownloadStarted" and e["involvedObject"]["name"] == SEED for e in events
    )


async def test_recreated_pod_reads_the_cache_without_a_download(kube: KubeEmulator) -> None:
    body = example(f"{SEED}.yaml")
    body["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    await apply(kube, body)
    pvc = await eventually(lambda: live(kube, PVCS, "default", PHI_CACHE), WAIT)
    job = await eventually(lambda: live(kube, JOBS, "default", download_job_name(PHI_CACHE)), WAIT)
    await nodes_up(kube)
    await finish_download(kube, PHI_CACHE, {"ok": True, "commit": "b" * 40, "bytes": 8 * GIB, "files": 9})
    await eventually(lambda: mirror(kube, SEED).get("status") == "True", WAIT)
    sts = await eventually(lambda: live(kube, STS, "default", SEED), WAIT)
    await run_pods(kube, SEED)
    await eventually(lambda: ws(kube, SEED).get("status", {}).get("state") == "Ready", WAIT)
    await eventually(lambda: started_downloads(kube) == 1, WAIT)

    # a node failure or an eviction: the pod is gone, the StatefulSet has no ready replica
    await call(kube, "DELETE", f"/api/v1/namespaces/default/pods/{SEED}-0")
    assert live(kube, "v1/pods", "default", f"{SEED}-0") is None
    sts_status = f"/apis/apps/v1/namespaces/default/statefulsets/{SEED}/status"
    await call(kube, "PATCH", sts_status, {"status": {"replicas": 1, "readyReplicas": 0}})
    lost = await eventually(
        lambda: condition(ws(kube, SEED), "InferenceReady").get("status") == "False" and ws(kube, SEED), WAIT
    )
    assert "0/1 inference pods ready" in condition(lost, "InferenceReady")["message"]
    assert condition(lost, "ModelMirrorReady")["status"] == "True"  # the weights are still there

    # the StatefulSet controller creates the pod again from the template the operator wrote
    template = live(kube, STS, "default", SEED)["spec"]["template"]  # type: ignore[index]
    assert template == sts["spec"]["template"]  # the loss changed nothing in what the pods are
    pod = {"metadata": {"name": f"{SEED}-0", **template["metadata"]}, "spec": template["spec"]}
    await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)
    await run_pods(kube, SEED)
    back = await eventually(
        lambda: ws(kube, SEED).get("status", {}).get("state") == "Ready" and ws(kube, SEED), WAIT
    )
    assert condition(back, "ModelMirrorReady")["status"] == "True"
    assert condition(back, "ModelMirrorReady")["reason"] == "ModelMirrorReady"
    assert condition(back, "InferenceReady")["status"] == "True"

    # the recreated pod reads the cache read-only, offline
    spec = live(kube, "v1/pods", "default", f"{SEED}-0")["spec"]  # type: ignore[index]
    volume = next(v for v in spec["volumes"] if v["name"] == "weight-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": PHI_CACHE, "readOnly": True}
    inference = spec["containers"][0]  # the engine (the first container, as the template has it)
    mount = {"name": "weight-cache", "mountPath": "/mnt/weight-cache", "readOnly": True}
    assert mount in inference["volumeMounts"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in inference["env"]
    assert inference["args"][inference["args"].index("--model") + 1] == "/mnt/weight-cache/model"

    # nothing downloads again: the same Job (done), the same PVC, no new download started
    jobs = cache_jobs(kube)
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]], json.dumps(jobs)[:500]
    assert jobs[0]["status"].get("succeeded") == 1
    now = live(kube, PVCS, "default", PHI_CACHE)
    assert now is not None and now["metadata"]["uid"] == pvc["metadata"]["uid"]
    assert now["metadata"]["annotations"]["kaito.sh/weight-cache-state"] == "Ready"
    assert len(objects(kube, PVCS)) == 1
    assert started_downloads(kube) == 1
    download_pods = [
        p for p in objects(kube, "v1/pods") if "kaito.sh/weight-cache" in p["metadata"].get("labels", {})
    ]
    assert len(download_pods) == 1  # the finished one; no new download pod asked for
