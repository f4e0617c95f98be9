"""The post-load benchmark Job against the emulator: the tests play the Job controller and kubelet."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES, KubeEmulator

pytestmark = pytest.mark.timeout(180)

SEED = "workspace-phi-4-mini-h100"
JOB = f"{SEED}-benchmark"
JOBS = "batch/v1/jobs"
WAIT = 60.0
SUMMARY = {
    "peakTokensPerMinute": 123456.7,
    "peakConcurrency": 8,
    "referenceConcurrency": 4,
    "ttftMs": 85.5,
    "tokensPerSecondPerStream": 41.2,
    "durationSec": 15,
    "maxConcurrency": 16,
    "inputTokens": 256,
    "outputTokens": 128,
    "failed": 0,
    "measuredAt": "2026-11-30T17:00:00+00:00",
}


def ws(kube: KubeEmulator) -> dict[str, Any]:
    return live(kube, WORKSPACES, "default", SEED) or {}


def job(kube: KubeEmulator) -> dict[str, Any] | None:
    return live(kube, JOBS, "default", JOB)


def reasons(kube: KubeEmulator) -> set[str]:
    return {e.get("reason", "") for e in objects(kube, "v1/events") if e["involvedObject"]["name"] == SEED}


@pytest.fixture
async def cluster(kube: KubeEmulator, operator_factory: Any) -> Any:
    assert kube.objects is not None  # Jobs are a built-in kind of the emulator
    async with operator_factory():
        yield kube


async def ready_seed(kube: KubeEmulator, annotations: dict[str, str] | None = None) -> None:
    body = example(f"{SEED}.yaml")
    if annotations:
        body["metadata"].setdefault("annotations", {}).update(annotations)
    await apply(kube, body)
    await eventually(lambda: objects(kube, NODECLAIMS), WAIT)
    await launch_nodeclaims(kube)
    await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", SEED), WAIT)
    assert job(kube) is None  # not before the Workspace serves
    await run_pods(kube, SEED)
    await eventually(lambda: condition(ws(kube), "WorkspaceSucceeded").get("status") == "True", WAIT)


async def finish_job(kube: KubeEmulator, *, succeeded: bool, message: str, failure: str = "") -> None:
    """What the Job controller and the kubelet do: a pod that terminated with ``message``, a Job status."""
    pod = {
        "metadata": {"name": f"{JOB}-x1", "labels": {"kaito.sh/benchmark": SEED}},
        "spec": {"containers": []},
    }
    if live(kube, "v1/pods", "default", pod["metadata"]["name"]) is None:
        await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)
    terminated = {"exitCode": 0 if succeeded else 2, "message": message}
    status = {
        "phase": "Succeeded" if succeeded else "Failed",
        "containerStatuses": [{"name": "benchmark", "ready": False, "state": {"terminated": terminated}}],
    }
    await call(kube, "PATCH", f"/api/v1/namespaces/default/pods/{JOB}-x1/status", {"status": status})
    job_status: dict[str, Any] = {"succeeded": 1} if succeeded else {"failed": 1}
    if failure:
        job_status["conditions"] = [{"type": "Failed", "status": "True", "reason": "x", "message": failure}]
    await call(kube, "PATCH", f"/apis/batch/v1/namespaces/default/jobs/{JOB}/status", {"status": job_status})


async def test_ready_workspace_gets_a_benchmark_job_and_its_result(cluster: KubeEmulator) -> None:
    kube = cluster
    await ready_seed(kube)
    created = await eventually(lambda: job(kube), WAIT)
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["kaito", "bench", f"http://{SEED}.default.svc"]
    assert "--status-file" in container["command"]
    assert created["spec"]["backoffLimit"] == 0 and created["spec"]["activeDeadlineSeconds"] > 0
    owner = created["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Workspace", SEED)
    assert "kaito.sh/workspace" not in created["spec"]["template"]["metadata"]["labels"]
    await eventually(lambda: "BenchmarkStarted" in reasons(kube), WAIT)
    assert condition(ws(kube), "BenchmarkCompleted") == {}  # nothing recorded while it runs

    await finish_job(kube, succeeded=True, message=json.dumps(SUMMARY))
    done = await eventually(
        lambda: condition(ws(kube), "BenchmarkCompleted").get("status") == "True" and ws(kube), WAIT
    )
    metrics = done["status"]["performance"]["metrics"]
    peak = metrics["peakTokensPerMinute"]
    assert peak["value"] == "123457" or float(peak["value"]) == pytest.approx(123456.7)
    assert peak["unit"] == "tokens/min" and peak["description"] == "stress/high-concurrency"
    assert peak["config"]["measuredAt"] == SUMMARY["measuredAt"] and peak["config"]["maxConcurrency"] == "16"
    assert metrics["timeToFirstToken"]["value"] == "85.5" and metrics["timeToFirstToken"]["unit"] == "ms"
    assert metrics["timeToFirstToken"]["config"]["concurrency"] == "4"
    assert metrics["tokensPerSecondPerStream"]["value"] == "41.2"
    assert condition(done, "BenchmarkCompleted")["reason"] == "BenchmarkCompleted"
    assert done["status"]["state"] == "Ready"
    assert all(condition(done, t)["status"] == "True" for t in ("InferenceReady", "WorkspaceSucceeded"))
    await eventually(lambda: "BenchmarkCompleted" in reasons(kube), WAIT)


async def test_a_failed_benchmark_leaves_the_workspace_ready(cluster: KubeEmulator) -> None:
    kube = cluster
    await ready_seed(kube)
    await eventually(lambda: job(kube), WAIT)
    await finish_job(
        kube,
        succeeded=False,
        message="error: cannot reach http://x",
        failure="Job was active longer than specified deadline",
    )
    failed = await eventually(
        lambda: condition(ws(kube), "BenchmarkCompleted").get("status") == "False" and ws(kube), WAIT
    )
    cond = condition(failed, "BenchmarkCompleted")
    assert cond["reason"] == "BenchmarkFailed"
    assert "active longer than specified deadline" in cond["message"] and "delete the Job" in cond["message"]
    assert failed["status"]["state"] == "Ready"
    assert all(
        condition(failed, t)["status"] == "True"
        for t in ("InferenceReady", "WorkspaceSucceeded", "ResourceReady")
    )
    assert "performance" not in failed["status"]
    await eventually(lambda: "BenchmarkFailed" in reasons(kube), WAIT)

    # deleting the Job runs the benchmark again
    await call(kube, "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{JOB}")
    again = await eventually(
        lambda: (j := job(kube)) and not (j.get("status") or {}).get("failed") and j, WAIT
    )
    assert again["metadata"]["name"] == JOB


async def test_a_job_without_a_result_is_a_failure(cluster: KubeEmulator) -> None:
    kube = cluster
    await ready_seed(kube)
    await eventually(lambda: job(kube), WAIT)
    await finish_job(kube, succeeded=True, message="not json")
    cond = await eventually(
        lambda: (c := condition(ws(kube), "BenchmarkCompleted")).get("status") == "False" and c, WAIT
    )
    assert cond["reason"] == "BenchmarkFailed" and "left no result" in cond["message"]
    assert ws(kube)["status"]["state"] == "Ready"


async def test_the_annotation_turns_the_benchmark_off(cluster: KubeEmulator) -> None:
    kube = cluster
    await ready_seed(kube, {"kaito.sh/disable-benchmark": "true"})
    # an update handled after Ready: once kopf records it, that reconcile has finished
    patch = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
    await call(kube, "PATCH", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}", patch)
    await eventually(
        lambda: (
            "example.com/touched"
            in ws(kube)["metadata"]["annotations"].get("kaito.sh/last-handled-configuration", "")
        ),
        WAIT,
    )
    assert job(kube) is None
    assert "BenchmarkStarted" not in reasons(kube)
    assert condition(ws(kube), "BenchmarkCompleted") == {}

    # turning it back on starts it
    patch = {"metadata": {"annotations": {"kaito.sh/disable-benchmark": "false"}}}
    await call(kube, "PATCH", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}", patch)
    await eventually(lambda: job(kube), WAIT)


@pytest.fixture
async def tuned(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """The emulator and the operator as the chart installs them with benchmark values set."""
    from tests.operator.conftest import emulated_cluster, running_operator

    values = ("replicas=1", *request.param)
    async with emulated_cluster(tmp_path, monkeypatch, *values) as kube:
        deployment = next(o for o in kube.manifests if o["kind"] == "Deployment")
        for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if env["name"].startswith("KAITO_OPERATOR_BENCHMARK_"):
                monkeypatch.setenv(env["name"], env["value"])
        async with running_operator(kube):
            yield kube


@pytest.mark.parametrize(
    "tuned",
    [("benchmark.maxConcurrency=4", "benchmark.stepRequests=12", "benchmark.stepSeconds=5")],
    indirect=True,
)
async def test_chart_benchmark_values_shape_the_job(tuned: KubeEmulator) -> None:
    kube = tuned
    await ready_seed(kube)
    created = await eventually(lambda: job(kube), WAIT)
    command = created["spec"]["template"]["spec"]["containers"][0]["command"]
    flags = {
        name: command[command.index(name) + 1] for name in ("--max-concurrency", "--requests", "--duration")
    }
    assert flags == {"--max-concurrency": "4", "--requests": "12", "--duration": "5s"}


@pytest.mark.parametrize("tuned", [("benchmark.enabled=false",)], indirect=True)
async def test_chart_can_turn_the_benchmark_off(tuned: KubeEmulator) -> None:
    kube = tuned
    await ready_seed(kube)
    # an update handled after Ready: once kopf records it, that reconcile has finished
    patch = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
    await call(kube, "PATCH", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}", patch)
    await eventually(
        lambda: (
            "example.com/touched"
            in ws(kube)["metadata"]["annotations"].get("kaito.sh/last-handled-configuration", "")
        ),
        WAIT,
    )
    assert job(kube) is None and "BenchmarkStarted" not in reasons(kube)
    assert condition(ws(kube), "BenchmarkCompleted") == {}
