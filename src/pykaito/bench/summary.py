"""A run in a few numbers: what the operator records in a Workspace's status.performance.

``kaito bench --status-file PATH`` writes this JSON (well under the 4 KiB a container's termination
message holds); the operator's benchmark Job writes it to ``/dev/termination-log``.

- ``peakTokensPerMinute``: the highest total (input + output) token throughput of any step, per minute;
- ``ttftMs`` and ``tokensPerSecondPerStream``: TTFT p50 and per-stream speed at the reference
  concurrency (the largest measured step not above it);
- the settings they were measured with, and when.
"""

from __future__ import annotations

from typing import Any

from pykaito.bench.load import RunResult
from pykaito.errors import PykaitoError


def performance_summary(result: RunResult, reference_concurrency: int = 4) -> dict[str, Any]:
    """The figures a Workspace's status records, from a sweep or fixed-concurrency run."""
    steps = [s for s in result.steps if s.figures.completed > 0]
    if not steps:
        raise PykaitoError("the benchmark completed no request: nothing to record")
    peak = max(steps, key=lambda s: s.figures.total_token_throughput)
    sized = [s for s in steps if (s.step.concurrency or 0) <= reference_concurrency]
    ref = max(sized, key=lambda s: s.step.concurrency or 0) if sized else steps[0]
    budget = result.meta.get("budget") or {}
    return {
        "peakTokensPerMinute": round(peak.figures.total_token_throughput * 60, 1),
        "peakOutputTokensPerMinute": round(peak.figures.output_throughput * 60, 1),
        "peakConcurrency": peak.step.concurrency,
        "referenceConcurrency": ref.step.concurrency,
        "ttftMs": round(ref.figures.ttft.p50 * 1000, 1),
        "tokensPerSecondPerStream": round(ref.figures.per_stream_tokens_per_s, 1),
        "durationSec": budget.get("duration_s"),
        "maxConcurrency": max(s.step.concurrency or 0 for s in result.steps),
        "inputTokens": result.meta.get("input_tokens"),
        "outputTokens": result.meta.get("output_tokens"),
        "failed": sum(s.figures.failed for s in result.steps),
        "measuredAt": result.meta.get("finished") or result.meta.get("started"),
    }
