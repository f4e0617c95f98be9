"""The weight cache against the emulator, under the chart's RBAC with ``weightCache.enabled``.

The tests play the Job controller and the kubelet: the download pod, its log lines (progress) and
its termination message (the downloader's result), the Job's status.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pykaito.catalog import load_catalog
from pykaito.manifests.weight_cache import cache_name, download_job_name
from tests.operator import chart
from tests.operator.cluster import (
    apply,
    call,
    condition,
    eventually,
    example,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
)
from tests.operator.conftest import emulated_cluster, running_operator
from tests.operator.kube_emulator import WORKSPACES, KubeEmulator
from tests.operator.test_cluster_cli import Kaito
from tests.operator.test_cluster_cli import kaito as kaito  # the fixture: the real CLI on a thread
from tests.operator.test_inferenceset import NAME as SET_NAME
from tests.operator.test_inferenceset import SET, SETS_PATH, play_cluster
from tests.operator.test_rbac import model_access

pytestmark = pytest.mark.timeout(240)

SEED = "workspace-phi-4-mini-h100"
SECOND = "phi-second"
GATED = "workspace-llama-3-3-70b"
PHI_COMMIT = load_catalog().preset("phi-4-mini-instruct").revision  # the commit the preset is pinned to
PHI_CACHE = cache_name("microsoft/Phi-4-mini-instruct", PHI_COMMIT)
LLAMA_CACHE = cache_name(
    "meta-llama/Llama-3.3-70B-Instruct", load_catalog().preset("llama-3.3-70b-instruct").revision
)
PVCS = "v1/persistentvolumeclaims"
JOBS = "batch/v1/jobs"
STS = "apps/v1/statefulsets"
WS_PATH = "/apis/kaito.sh/v1beta1/namespaces/default/workspaces"
TOKEN = "hf_supersecret_cache_token"
WAIT = 60.0
GIB = 1024**3
CHART_VALUES = ("replicas=1", "weightCache.enabled=true", "weightCache.storageClass=fast-rwx")


@pytest.fixture
async def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeEmulator]:
    """The cluster under the chart's rules with the weight cache on, and the operator told the same."""
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_ENABLED", "true")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_STORAGE_CLASS", "fast-rwx")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE", "1s")
    monkeypatch.setenv("KAITO_OPERATOR_WEIGHT_CACHE_GC_INTERVAL_SECONDS", "0.3")
    monkeypatch.setenv("KAITO_OPERATOR_RUNTIME_IMAGE_CPU", "registry.example/runtime-cpu:1")
    async with (
        emulated_cluster(tmp_path, monkeypatch, *CHART_VALUES) as emulator,
        running_operator(emulator),
    ):
        yield emulator


def ws(kube: KubeEmulator, name: str) -> dict[str, Any]:
    return live(kube, WORKSPACES, "default", name) or {}


def mirror(kube: KubeEmulator, name: str) -> dict[str, Any]:
    return condition(ws(kube, name), "ModelMirrorReady")


def reasons(kube: KubeEmulator, name: str) -> set[str]:
    return {e.get("reason", "") for e in objects(kube, "v1/events") if e["involvedObject"]["name"] == name}


def cache_jobs(kube: KubeEmulator) -> list[dict[str, Any]]:
    return [j for j in objects(kube, JOBS) if "kaito.sh/weight-cache" in j["metadata"].get("labels", {})]


async def download_pod(
    kube: KubeEmulator, cache: str, *, log: str = "", terminated: dict[str, Any] | None = None
) -> str:
    """The Job's pod as the kubelet reports it: Running (with ``log``), or terminated."""
    name = f"{download_job_name(cache)}-x1"
    if live(kube, "v1/pods", "default", name) is None:
        pod = {
            "metadata": {"name": name, "labels": {"kaito.sh/weight-cache": cache}},
            "spec": {"containers": []},
        }
        await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)
    kube.pod_logs[("default", name)] = log
    state = {"terminated": terminated} if terminated else {"running": {}}
    phase = "Running" if not terminated else ("Succeeded" if terminated["exitCode"] == 0 else "Failed")
    status = {
        "phase": phase,
        "containerStatuses": [{"name": "download", "ready": not terminated, "state": state}],
    }
    await call(kube, "PATCH", f"/api/v1/namespaces/default/pods/{name}/status", {"status": status})
    return name


async def finish_download(kube: KubeEmulator, cache: str, result: dict[str, Any]) -> None:
    ok = bool(result["ok"])
    await download_pod(kube, cache, terminated={"exitCode": 0 if ok else 1, "message": json.dumps(result)})
    job_status: dict[str, Any] = {"succeeded": 1} if ok else {"failed": 1}
    if not ok:
        job_status["conditions"] = [
            {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 1"}
        ]
    path = f"/apis/batch/v1/namespaces/default/jobs/{download_job_name(cache)}/status"
    await call(kube, "PATCH", path, {"status": job_status})


async def nodes_up(kube: KubeEmulator, *, gpus: int = 1) -> None:
    await eventually(lambda: objects(kube, "karpenter.sh/v1/nodeclaims"), WAIT)
    await launch_nodeclaims(kube, gpus=gpus)


def no_token_anywhere(kube: KubeEmulator, token: str) -> None:
    """The token is in its Secret only: never in an argument, an env value, an Event or a status."""
    for (res, _, name), obj in kube.objects.items():
        if res.plural == "secrets" or obj.deleted:
            continue
        assert token not in json.dumps(obj.raw), f"{res.plural}/{name} holds the token"


async def test_first_workspace_downloads_second_reuses_unused_cache_is_collected(
    kube: KubeEmulator, kaito: Kaito, tmp_path: Path
) -> None:
    secret = {"metadata": {"name": "hf-token"}, "stringData": {"HF_TOKEN": TOKEN}}
    await call(kube, "POST", "/api/v1/namespaces/default/secrets", secret)
    body = example(f"{SEED}.yaml")
    body["metadata"]["annotations"] = {"kaito.sh/disable-benchmark": "true"}
    body["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    await apply(kube, body)

    pvc = await eventually(lambda: live(kube, PVCS, "default", PHI_CACHE), WAIT)
    assert pvc["spec"]["storageClassName"] == "fast-rwx" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "11Gi"  # 7.15 GiB x 1.02, +15 %, +2 GiB
    assert pvc["metadata"]["labels"]["kaito.sh/weight-cache"] == PHI_CACHE
    assert "ownerReferences" not in pvc["metadata"]  # shared by every Workspace on the model
    job = await eventually(lambda: live(kube, JOBS, "default", download_job_name(PHI_CACHE)), WAIT)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/runtime-cpu:1"
    assert container["command"][:3] == ["python3", "-m", "pykaito.models.snapshot"]
    assert container["command"][container["command"].index("--repo") + 1] == "microsoft/Phi-4-mini-instruct"
    assert container["command"][container["command"].index("--revision") + 1] == PHI_COMMIT
    token_env = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"]["name"] == "hf-token" and "value" not in token_env

    await nodes_up(kube)
    # the nodes are ready, the weights are not: nothing runs yet
    held = await eventually(
        lambda: (
            condition(ws(kube, SEED), "ResourceReady").get("reason") == "ModelMirrorNotReady"
            and ws(kube, SEED)
        ),
        WAIT,
    )
    assert live(kube, STS, "default", SEED) is None
    assert condition(held, "ModelMirrorReady")["status"] == "False"
    assert condition(held, "ModelMirrorReady")["reason"] == "ModelMirrorPending"
    assert held["status"]["state"] == "Pending"

    log = "\n".join(json.dumps({"done": d * GIB, "total": 8 * GIB}) for d in (0, 1, 2))
    await download_pod(kube, PHI_CACHE, log=log)
    await eventually(lambda: "2.00 GiB of 8.00 GiB (25%)" in mirror(kube, SEED).get("message", ""), WAIT)
    assert live(kube, STS, "default", SEED) is None
    admin = ("--kubeconfig", str(tmp_path / "kubeconfig"))  # the user's, not the operator's
    described = await kaito("describe", SEED, *admin)
    assert described.code == 0, described.err
    assert "ModelMirrorReady" in described.out and "2.00 GiB of 8.00 GiB (25%)" in described.out
    waited = await kaito("wait", SEED, "--timeout", "1s", *admin)
    assert waited.code != 0 and "ModelMirrorNotReady" in waited.err and "(25%)" in waited.err

    commit = "a" * 40
    await finish_download(kube, PHI_CACHE, {"ok": True, "commit": commit, "bytes": 8 * GIB, "files": 9})
    ready = await eventually(lambda: mirror(kube, SEED).get("status") == "True" and ws(kube, SEED), WAIT)
    assert condition(ready, "ModelMirrorReady")["reason"] == "ModelMirrorReady"
    assert "commit aaaaaaaaaaaa" in condition(ready, "ModelMirrorReady")["message"]
    annotations = live(kube, PVCS, "default", PHI_CACHE)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["kaito.sh/weight-cache-state"] == "Ready"
    assert annotations["kaito.sh/weight-cache-commit"] == commit
    sts = await eventually(lambda: live(kube, STS, "default", SEED), WAIT)
    spec = sts["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "weight-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": PHI_CACHE, "readOnly": True}
    inference = spec["containers"][0]
    assert {"name": "weight-cache", "mountPath": "/mnt/weight-cache", "readOnly": True} in inference[
        "volumeMounts"
    ]
    assert inference["args"][inference["args"].index("--model") + 1] == "/mnt/weight-cache/model"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in inference["env"]
    await run_pods(kube, SEED)
    await eventually(lambda: ws(kube, SEED).get("status", {}).get("state") == "Ready", WAIT)
    await eventually(
        lambda: (
            {"WeightCacheCreated", "WeightDownloadStarted", "WeightDownloadSucceeded"} <= reasons(kube, SEED)
        ),
        WAIT,
    )

    # a second Workspace on the same model: the cache is ready, no second download
    second = example(f"{SEED}.yaml")
    second["metadata"] = {"name": SECOND, "annotations": {"kaito.sh/disable-benchmark": "true"}}
    await apply(kube, second)

    async def provisioned() -> dict[str, Any] | None:
        await launch_nodeclaims(kube)  # Karpenter, for the new Workspace's NodeClaim
        return live(kube, STS, "default", SECOND)

    await eventually(provisioned, WAIT)
    await eventually(lambda: mirror(kube, SECOND).get("status") == "True", WAIT)
    assert len(cache_jobs(kube)) == 1 and len(objects(kube, PVCS)) == 1
    await run_pods(kube, SECOND)
    await eventually(lambda: ws(kube, SECOND).get("status", {}).get("state") == "Ready", WAIT)
    assert "WeightDownloadStarted" not in reasons(kube, SECOND)

    # in use: the sweeps leave it alone
    user = chart.operator_user(kube.manifests)

    def sweeps() -> int:
        return sum(
            1
            for a in kube.audit
            if a.user == user.name and a.resource == "persistentvolumeclaims" and a.verb == "list"
        )

    before = sweeps()
    await eventually(lambda: sweeps() >= before + 4, WAIT)
    kept = live(kube, PVCS, "default", PHI_CACHE)
    assert kept is not None and "kaito.sh/weight-cache-unused-since" not in kept["metadata"]["annotations"]

    # an InferenceSet's new replica on the model starts from the cache, no download
    one = copy.deepcopy(SET)
    one["spec"]["replicas"] = 1
    await call(kube, "POST", SETS_PATH, one)

    async def replica_started() -> dict[str, Any] | None:
        await play_cluster(kube)
        return live(kube, STS, "default", f"{SET_NAME}-0")

    replica = await eventually(replica_started, WAIT)
    claim = {"claimName": PHI_CACHE, "readOnly": True}
    assert {"name": "weight-cache", "persistentVolumeClaim": claim} in replica["spec"]["template"]["spec"][
        "volumes"
    ]
    assert len(cache_jobs(kube)) == 1

    # scaled to zero, its template still runs the model: the cache stays
    await call(kube, "PATCH", f"{SETS_PATH}/{SET_NAME}", {"spec": {"replicas": 0}})
    await eventually(lambda: live(kube, WORKSPACES, "default", f"{SET_NAME}-0") is None, WAIT)
    for name in (SEED, SECOND):
        await call(kube, "DELETE", f"{WS_PATH}/{name}")
    await eventually(lambda: not objects(kube, WORKSPACES), WAIT)
    before = sweeps()
    await eventually(lambda: sweeps() >= before + 4, WAIT)
    assert live(kube, PVCS, "default", PHI_CACHE) is not None

    # unused: marked, then deleted with its Job after the grace period
    await call(kube, "DELETE", f"{SETS_PATH}/{SET_NAME}")
    await eventually(lambda: live(kube, PVCS, "default", PHI_CACHE) is None, WAIT)
    assert cache_jobs(kube) == []

    no_token_anywhere(kube, TOKEN)
    assert kube.denied(user) == []
    used = {(a.group, a.resource, a.verb) for a in kube.audit if a.user == user.name}
    assert kube.authorizer is not None
    added = kube.authorizer.granted(user) - chart.authorizer(chart.render("replicas=1")).granted(user)
    assert added == {
        ("", "persistentvolumeclaims", "get"),
        ("", "persistentvolumeclaims", "list"),
        ("", "persistentvolumeclaims", "create"),
        ("", "persistentvolumeclaims", "patch"),
        ("", "persistentvolumeclaims", "delete"),
        ("batch", "jobs", "delete"),
        ("", "pods/log", "get"),
    }
    assert added <= used, f"the chart grants what the weight cache never uses: {sorted(added - used)}"


async def test_failed_download_is_reported_with_its_reason_and_runs_again_once_the_job_is_deleted(
    kube: KubeEmulator,
) -> None:
    await model_access(kube, "default")  # the gated 70B example with its Secret hf-token
    await eventually(lambda: live(kube, JOBS, "default", download_job_name(LLAMA_CACHE)), WAIT)
    await nodes_up(kube, gpus=8)
    message = "meta-llama/Llama-3.3-70B-Instruct is gated and the token given has no access to it"
    await finish_download(kube, LLAMA_CACHE, {"ok": False, "reason": "Unauthorized", "message": message})

    failed = await eventually(
        lambda: (
            mirror(kube, GATED).get("status") == "False"
            and mirror(kube, GATED).get("reason") == "DownloadUnauthorized"
            and ws(kube, GATED)
        ),
        WAIT,
    )
    text = condition(failed, "ModelMirrorReady")["message"]
    assert message in text and f"delete Job {download_job_name(LLAMA_CACHE)}" in text
    assert failed["status"]["state"] == "Failed"
    assert condition(failed, "WorkspaceSucceeded")["reason"] == "workspaceFailed"
    assert condition(failed, "ResourceReady")["reason"] == "ModelMirrorNotReady"
    assert live(kube, STS, "default", GATED) is None

    def warning() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in objects(kube, "v1/events")
                if e["involvedObject"]["name"] == GATED and e.get("reason") == "DownloadUnauthorized"
            ),
            None,
        )

    event = await eventually(warning, WAIT)
    assert event["type"] == "Warning" and message in event["message"]

    # the user fixes the token and deletes the Job: a new download runs, and succeeds
    await call(kube, "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{download_job_name(LLAMA_CACHE)}")
    await call(kube, "DELETE", f"/api/v1/namespaces/default/pods/{download_job_name(LLAMA_CACHE)}-x1")
    await eventually(
        lambda: (
            (j := live(kube, JOBS, "default", download_job_name(LLAMA_CACHE))) is not None
            and not j.get("status")
        ),
        WAIT,
    )
    await eventually(lambda: mirror(kube, GATED).get("reason") == "ModelMirrorPending", WAIT)
    await finish_download(
        kube, LLAMA_CACHE, {"ok": True, "commit": "b" * 40, "bytes": 140 * GIB, "files": 40}
    )
    await eventually(lambda: live(kube, STS, "default", GATED), WAIT)
    await eventually(lambda: mirror(kube, GATED).get("status") == "True", WAIT)

    # the PVC deleted by hand: a new, empty one is never taken as ready from the old Job's success
    job_path = f"/apis/batch/v1/namespaces/default/jobs/{download_job_name(LLAMA_CACHE)}"
    job = live(kube, JOBS, "default", download_job_name(LLAMA_CACHE))
    assert job is not None
    old_uid = job["metadata"]["uid"]
    job["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # made long before the new PVC
    assert (await call(kube, "GET", job_path))["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    await call(kube, "DELETE", f"/api/v1/namespaces/default/persistentvolumeclaims/{LLAMA_CACHE}")

    def replaced() -> bool:
        again = live(kube, JOBS, "default", download_job_name(LLAMA_CACHE))
        return again is not None and again["metadata"]["uid"] != old_uid and not again.get("status")

    await eventually(replaced, WAIT)
    await eventually(lambda: live(kube, PVCS, "default", LLAMA_CACHE), WAIT)
    await eventually(lambda: mirror(kube, GATED).get("reason") == "ModelMirrorPending", WAIT)
    no_token_anywhere(kube, "hf_not_a_real_token")
