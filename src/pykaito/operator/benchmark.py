"""The post-load benchmark: a Job per Ready Workspace, its result in status.performance.

After a Workspace turns Ready (unless ``kaito.sh/disable-benchmark`` is "true") the operator creates
its benchmark Job once. When the Job ends, the figures its container left in its termination
message become ``status.performance`` (metrics named as upstream: ``peakTokensPerMinute``, plus
``timeToFirstToken`` and ``tokensPerSecondPerStream`` at the reference concurrency) and the
``BenchmarkCompleted`` condition turns True; a failed Job sets it False with reason
``BenchmarkFailed``. The benchmark only ever writes that condition and ``performance``: it never
changes the Workspace's readiness or state, and an error here is logged, never raised.

A recorded result stays (write-once, as upstream). Deleting the Job runs the benchmark again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pykaito.api.types import CONDITION_BENCHMARK_COMPLETED, PerformanceMetric, State, Workspace
from pykaito.errors import ClusterError
from pykaito.manifests import Images
from pykaito.manifests.benchmark import (
    LABEL_BENCHMARK,
    benchmark_enabled,
    benchmark_job_name,
    render_benchmark_job,
)
from pykaito.operator.context import Events, Runtime, meta_of
from pykaito.operator.kubeapi import PODS, WORKSPACES, ApiError, Resource
from pykaito.operator.status import now, write_status

logger = logging.getLogger(__name__)

JOBS = Resource("batch", "v1", "jobs")
BENCHMARK_COMPLETED = CONDITION_BENCHMARK_COMPLETED
REASON_COMPLETED = "BenchmarkCompleted"
REASON_FAILED = "BenchmarkFailed"
PEAK_DESCRIPTION = "stress/high-concurrency"


def job_outcome(job: Mapping[str, Any]) -> str:
    """``succeeded``, ``failed`` or ``running``, from a Job's status."""
    status = job.get("status") or {}
    if int(status.get("succeeded") or 0) > 0:
        return "succeeded"
    if int(status.get("failed") or 0) > 0:
        return "failed"
    for c in status.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if c.get("status") == "True" and c.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The benchmark container's termination message (the newest pod's), or ""."""
    for pod in sorted(pods, key=lambda p: str(meta_of(p).get("creationTimestamp") or ""), reverse=True):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"])
    return ""


def performance_from(summary: Mapping[str, Any]) -> dict[str, Any]:
    """status.performance from the JSON `kaito bench --status-file` wrote (KeyError/ValueError if not)."""
    peak = float(summary["peakTokensPerMinute"])
    if peak <= 0:
        raise ValueError(f"peak throughput {peak} tokens/min: the run measured nothing")
    when = str(summary.get("measuredAt") or "")
    settings = {
        key: str(summary[key])
        for key in ("durationSec", "inputTokens", "outputTokens", "maxConcurrency", "peakConcurrency")
        if summary.get(key) is not None
    }
    reference = {"concurrency": str(summary.get("referenceConcurrency")), "measuredAt": when}
    return {
        "metrics": {
            PerformanceMetric.PEAK_TOKENS_PER_MINUTE.value: {
                "description": PEAK_DESCRIPTION,
                "value": f"{peak:g}",
                "unit": "tokens/min",
                "config": {**settings, "measuredAt": when},
            },
            PerformanceMetric.TIME_TO_FIRST_TOKEN.value: {
                "description": "latency/p50-at-reference-concurrency",
                "value": f"{float(summary['ttftMs']):g}",
                "unit": "ms",
                "config": reference,
            },
            PerformanceMetric.TOKENS_PER_SECOND_PER_STREAM.value: {
                "description": "decode/per-stream-at-reference-concurrency",
                "value": f"{float(summary['tokensPerSecondPerStream']):g}",
                "unit": "tokens/s",
                "config": reference,
            },
        }
    }


def with_condition(
    conditions: list[dict[str, Any]] | None, ok: bool, reason: str, message: str, generation: Any
) -> list[dict[str, Any]]:
    """The conditions list with BenchmarkCompleted set (others untouched)."""
    result = [dict(c) for c in conditions or [] if c.get("type") != BENCHMARK_COMPLETED]
    before = next((c for c in conditions or [] if c.get("type") == BENCHMARK_COMPLETED), None)
    status = "True" if ok else "False"
    changed = before is None or before.get("status") != status
    cond: dict[str, Any] = {
        "type": BENCHMARK_COMPLETED,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now() if changed else before.get("lastTransitionTime", now()),  # type: ignore[union-attr]
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return [*result, cond]


def recorded(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == BENCHMARK_COMPLETED and c.get("status") == "True" for c in conditions)


async def sync(
    rt: Runtime,
    body: Mapping[str, Any],
    workspace: Workspace,
    state: State,
    events: Events,
    images: Images | None,
) -> None:
    """Start the Job once the Workspace is Ready; record its result when it ends. Never raises."""
    if not rt.settings.benchmark.enabled:
        return
    if state is not State.READY or not benchmark_enabled(workspace) or recorded(body):
        return
    try:
        await _sync(rt, workspace, events, images)
    except (ClusterError, ValueError, KeyError, TypeError) as exc:
        logger.warning("benchmark of workspace %s/%s: %s", workspace.namespace, workspace.name, exc)


async def _sync(rt: Runtime, workspace: Workspace, events: Events, images: Images | None) -> None:
    namespace, name = workspace.namespace, benchmark_job_name(workspace)
    job = await rt.kube.get(JOBS, namespace, name)
    if job is None:
        try:
            await rt.kube.create(JOBS, render_benchmark_job(workspace, images, rt.settings.benchmark))
        except ApiError as exc:
            if not exc.conflict:
                raise
            return
        events.info("BenchmarkStarted", f"started the benchmark Job {name}")
        return
    outcome = job_outcome(job)
    if outcome == "running":
        return
    latest = await rt.kube.get(WORKSPACES, namespace, workspace.name)
    if latest is None or recorded(latest):
        return
    pods = await rt.kube.list(PODS, namespace, labels={LABEL_BENCHMARK: workspace.name})
    message = termination_message(pods)
    status: dict[str, Any] = {}
    if outcome == "succeeded":
        try:
            status["performance"] = performance_from(json.loads(message))
            peak = status["performance"]["metrics"]["peakTokensPerMinute"]["value"]
            ok, reason, text = True, REASON_COMPLETED, f"benchmark result recorded: peak {peak} tokens/min"
        except (ValueError, KeyError, TypeError) as exc:
            ok, reason = False, REASON_FAILED
            text = f"the benchmark Job {name} left no result ({exc}); delete the Job to run it again"
    else:
        ok, reason = False, REASON_FAILED
        lines = message.strip().splitlines()
        why = _failure(job) or (lines[-1] if lines else "")
        text = f"the benchmark Job {name} failed: {why or 'no message'}; delete the Job to run it again"
    meta = meta_of(latest)
    status["conditions"] = with_condition(
        (latest.get("status") or {}).get("conditions"), ok, reason, text[:1000], meta.get("generation")
    )
    await write_status(rt, latest, status)
    (events.info if ok else events.warn)(reason, text)


def _failure(job: Mapping[str, Any]) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return str(c.get("message") or c.get("reason") or "")
    return ""
