"""The benchmark Job's render and the operator's reading of its result: pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.api.loading import parse_workspace
from pykaito.manifests import Images
from pykaito.manifests.benchmark import benchmark_enabled, render_benchmark_job
from pykaito.operator.benchmark import job_outcome, performance_from, termination_message, with_condition


def workspace(annotations: dict[str, str] | None = None, name: str = "phi") -> Any:
    body: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "team", "uid": "u-1", "annotations": annotations or {}},
        "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    return parse_workspace(body)


def test_job_render() -> None:
    job = render_benchmark_job(workspace(), Images(cpu="registry.example/cpu:1"))
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "phi-benchmark" and job["metadata"]["namespace"] == "team"
    assert job["metadata"]["labels"]["kaito.sh/workspace"] == "phi"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"] == {"kaito.sh/benchmark": "phi"}  # not counted as a serving pod
    assert pod["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    c = pod["spec"]["containers"][0]
    assert c["image"] == "registry.example/cpu:1"
    assert c["command"][:3] == ["kaito", "bench", "http://phi.team.svc"]
    assert c["command"][c["command"].index("--status-file") + 1] == c["terminationMessagePath"]
    assert all(e["name"] != "KAITO_API_KEY" for e in c["env"])


def test_job_passes_the_api_key_from_the_workspace_secret() -> None:
    job = render_benchmark_job(workspace({"kaito.sh/api-key-secret": "keys"}))
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "KAITO_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "keys", "key": "KAITO_API_KEY"}},
    } in env


@pytest.mark.parametrize(
    ("annotations", "enabled"),
    [
        pytest.param({}, True, id="default-on"),
        pytest.param({"kaito.sh/disable-benchmark": "true"}, False, id="disabled"),
        pytest.param({"kaito.sh/disable-benchmark": "false"}, True, id="explicitly-on"),
        pytest.param({"kaito.sh/disable-benchmark": "True"}, True, id="only-lowercase-true-disables"),
    ],
)
def test_annotation(annotations: dict[str, str], enabled: bool) -> None:
    assert benchmark_enabled(workspace(annotations)) is enabled


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        pytest.param({}, "running", id="new"),
        pytest.param({"active": 1}, "running", id="active"),
        pytest.param({"succeeded": 1}, "succeeded", id="succeeded"),
        pytest.param({"failed": 1}, "failed", id="failed"),
        pytest.param({"conditions": [{"type": "Failed", "status": "True"}]}, "failed", id="failed-condition"),
        pytest.param({"conditions": [{"type": "Complete", "status": "True"}]}, "succeeded", id="complete"),
    ],
)
def test_job_outcome(status: dict[str, Any], outcome: str) -> None:
    assert job_outcome({"status": status}) == outcome


def test_termination_message_of_the_newest_pod() -> None:
    def pod(ts: str, message: str) -> dict[str, Any]:
        state = {"terminated": {"message": message}}
        return {"metadata": {"creationTimestamp": ts}, "status": {"containerStatuses": [{"state": state}]}}

    assert (
        termination_message([pod("2026-01-01T00:00:00Z", "old"), pod("2026-01-02T00:00:00Z", "new")]) == "new"
    )
    assert termination_message([{"metadata": {}, "status": {}}]) == ""


def test_performance_from_summary() -> None:
    summary = {"peakTokensPerMinute": 6000.0, "ttftMs": 120.5, "tokensPerSecondPerStream": 33.3}
    summary |= {"referenceConcurrency": 4, "maxConcurrency": 8, "measuredAt": "2026-11-30T17:00:00+00:00"}
    metrics = performance_from(summary)["metrics"]
    assert metrics["peakTokensPerMinute"] == {
        "description": "stress/high-concurrency",
        "value": "6000",
        "unit": "tokens/min",
        "config": {"maxConcurrency": "8", "measuredAt": "2026-11-30T17:00:00+00:00"},
    }
    assert metrics["timeToFirstToken"]["value"] == "120.5"
    assert metrics["tokensPerSecondPerStream"]["config"] == {
        "concurrency": "4",
        "measuredAt": summary["measuredAt"],
    }
    with pytest.raises(ValueError, match="measured nothing"):
        performance_from({**summary, "peakTokensPerMinute": 0})
    with pytest.raises(KeyError):
        performance_from({"ttftMs": 1})


def test_with_condition_keeps_the_others_and_the_transition_time() -> None:
    others = [{"type": "InferenceReady", "status": "True", "reason": "x", "message": ""}]
    first = with_condition(others, False, "BenchmarkFailed", "boom", 3)
    assert first[0] == others[0] and first[1]["status"] == "False" and first[1]["observedGeneration"] == 3
    again = with_condition(first, False, "BenchmarkFailed", "boom again", 3)
    assert len(again) == 2 and again[1]["lastTransitionTime"] == first[1]["lastTransitionTime"]
    done = with_condition(again, True, "BenchmarkCompleted", "ok", 4)
    assert [c["type"] for c in done] == ["InferenceReady", "BenchmarkCompleted"] and done[1][
        "status"
    ] == "True"


def _flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_settings_from_the_chart_values_reach_the_job() -> None:
    from pykaito.operator.settings import settings_from_env

    env = {
        "KAITO_OPERATOR_BENCHMARK_MAX_CONCURRENCY": "8",
        "KAITO_OPERATOR_BENCHMARK_STEP_SECONDS": "5",
        "KAITO_OPERATOR_BENCHMARK_STEP_REQUESTS": "40",
        "KAITO_OPERATOR_BENCHMARK_OUTPUT_TOKENS": "64",
        "KAITO_OPERATOR_BENCHMARK_DEADLINE_SECONDS": "300",
    }
    settings = settings_from_env(env).benchmark
    job = render_benchmark_job(workspace(), Images(), settings)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    flags = ("--max-concurrency", "--duration", "--requests", "--output-tokens")
    assert [_flag(command, f) for f in flags] == ["8", "5s", "40", "64"]
    assert _flag(command, "--input-tokens") == "256"  # not set: the default
    assert job["spec"]["activeDeadlineSeconds"] == 300
    default = render_benchmark_job(workspace(), Images())["spec"]["template"]["spec"]["containers"][0]
    assert "--requests" not in default["command"]  # steps end by time unless stepRequests is set
    assert settings_from_env({"KAITO_OPERATOR_BENCHMARK_ENABLED": "false"}).benchmark.enabled is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"KAITO_OPERATOR_BENCHMARK_MAX_CONCURRENCY": "0"},
            "benchmark.maxConcurrency is 0: it must be at least 1",
            id="too-small",
        ),
        pytest.param(
            {"KAITO_OPERATOR_BENCHMARK_STEP_SECONDS": "soon"},
            "KAITO_OPERATOR_BENCHMARK_STEP_SECONDS='soon' is not a valid int",
            id="not-a-number",
        ),
        pytest.param(
            {"KAITO_OPERATOR_BENCHMARK_MAX_CONCURENCY": "8"},
            "KAITO_OPERATOR_BENCHMARK_MAX_CONCURENCY is not a benchmark setting",
            id="misspelt",
        ),
    ],
)
def test_bad_benchmark_settings_are_refused_with_the_reason(env: dict[str, str], message: str) -> None:
    from pykaito.errors import InputError
    from pykaito.operator.settings import settings_from_env

    with pytest.raises(InputError, match=message.replace("(", r"\(")) as err:
        settings_from_env(env)
    assert message in str(err.value)
