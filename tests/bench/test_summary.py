"""The few figures `kaito bench --status-file` writes for a Workspace's status."""

from __future__ import annotations

import pytest

from pykaito.bench.figures import step_figures
from pykaito.bench.load import RunResult, Step, StepResult
from pykaito.bench.samples import Sample
from pykaito.bench.summary import performance_summary
from pykaito.errors import PykaitoError


def step(concurrency: int, streams: int, tpot: float) -> StepResult:
    """``streams`` requests in parallel for 1 s: 10 input and 11 output tokens each."""
    samples = []
    for _ in range(streams):
        times = [0.1 + i * tpot for i in range(11)]
        samples.append(Sample(0.0, times[-1], times, input_tokens=10, output_tokens=11, status=200))
    return StepResult(Step(concurrency=concurrency), step_figures(samples), samples)


def test_peak_and_reference_figures() -> None:
    steps = [step(1, 1, 0.01), step(2, 2, 0.01), step(4, 4, 0.02), step(8, 8, 0.05)]
    meta = {"budget": {"duration_s": 15.0}, "input_tokens": 10, "output_tokens": 11, "finished": "T"}
    s = performance_summary(RunResult(meta, steps), reference_concurrency=3)
    # total tokens/s per step: streams * 21 / (0.1 + 10 * tpot): c=8 gives 8*21/0.6 = 280/s
    assert s["peakConcurrency"] == 8
    assert s["peakTokensPerMinute"] == pytest.approx(280 * 60, rel=1e-3)
    assert s["referenceConcurrency"] == 2  # the largest step not above 3
    assert s["ttftMs"] == pytest.approx(100.0) and s["tokensPerSecondPerStream"] == pytest.approx(100.0)
    assert (s["maxConcurrency"], s["durationSec"], s["measuredAt"], s["failed"]) == (8, 15.0, "T", 0)


def test_nothing_completed_is_an_error() -> None:
    failed = [Sample(0.0, 0.1, status=500, error="HTTP 500: x")]
    result = RunResult({}, [StepResult(Step(concurrency=1), step_figures(failed), failed)])
    with pytest.raises(PykaitoError, match="completed no request"):
        performance_summary(result)
