"""The figures of a step from samples whose timing is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pykaito.bench.figures import Distribution, Slo, percentile, step_figures
from pykaito.bench.samples import Sample
from pykaito.errors import InputError


def stream(
    start: float, ttft: float, gaps: list[float], tokens: int | None = None, prompt: int = 10
) -> Sample:
    times = [start + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    return Sample(
        start=start,
        end=times[-1],
        chunk_times=times,
        input_tokens=prompt,
        output_tokens=tokens if tokens is not None else len(times),
        status=200,
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([1.0], id="one"),
        pytest.param([3.0, 1.0, 2.0], id="three"),
        pytest.param([float(i) for i in range(101)], id="hundred-and-one"),
        pytest.param([0.1, 0.5, 0.2, 0.9, 0.35, 0.8, 0.05], id="uneven"),
    ],
)
@pytest.mark.parametrize("q", [0, 50, 90, 99, 100])
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))
    assert Distribution.of([]).count == 0


def test_step_figures_from_known_samples() -> None:
    # two streams of 5 tokens each: TTFT 0.1 s, 4 gaps of 0.01 s; the second starts 0.2 s later
    a = stream(0.0, 0.1, [0.01] * 4)
    b = stream(0.2, 0.1, [0.01] * 4)
    f = step_figures([a, b])
    assert f.requests == f.completed == 2 and f.failed == 0
    assert f.duration_s == pytest.approx(0.34)
    assert f.request_throughput == pytest.approx(2 / 0.34)
    assert f.output_throughput == pytest.approx(10 / 0.34)
    assert f.total_token_throughput == pytest.approx(30 / 0.34)
    assert f.ttft.mean == pytest.approx(0.1) and f.ttft.p99 == pytest.approx(0.1)
    assert f.tpot.mean == pytest.approx(0.01)
    assert f.itl.count == 8 and f.itl.p50 == pytest.approx(0.01)
    assert f.e2e.p50 == pytest.approx(0.14)
    assert f.per_stream_tokens_per_s == pytest.approx(100.0)


def test_tpot_uses_reported_tokens_not_chunks() -> None:
    # one chunk carried 3 tokens: usage says 6 tokens over 4 chunks
    s = stream(0.0, 0.1, [0.01, 0.03, 0.01], tokens=6)
    assert s.tpot == pytest.approx((0.15 - 0.1) / 5)
    assert s.itls() == pytest.approx([0.01, 0.03, 0.01])


def test_failures_and_429s_are_counted_apart_from_the_figures() -> None:
    ok = stream(0.0, 0.1, [0.01] * 3)
    limited = Sample(start=0.0, end=0.001, status=429, error="HTTP 429: queue full")
    broken = Sample(start=0.0, end=0.002, status=500, error="HTTP 500: boom")
    dropped = Sample(
        start=0.0, end=0.05, status=200, error="truncated: the stream ended without data: [DONE]"
    )
    f = step_figures([ok, limited, broken, dropped])
    assert (f.requests, f.completed, f.failed, f.rate_limited) == (4, 1, 3, 1)
    assert f.errors == {"HTTP 429": 1, "HTTP 500": 1, "truncated": 1}
    assert f.ttft.count == 1 and f.output_tokens == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("ttft=500ms,tpot=50ms", Slo(ttft=0.5, tpot=0.05), id="vllm-style"),
        pytest.param("e2e=2s", Slo(e2e=2.0), id="seconds"),
        pytest.param(" itl = 20ms ", Slo(itl=0.02), id="spaces"),
        pytest.param("ttft=1.5", Slo(ttft=1.5), id="bare-seconds"),
    ],
)
def test_slo_parse(text: str, expected: Slo) -> None:
    assert Slo.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("latency=5ms", "not an objective", id="unknown-name"),
        pytest.param("ttft", "not an objective", id="no-value"),
        pytest.param("ttft=fast", "not a duration", id="bad-duration"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_slo_parse_errors_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Slo.parse(text)


def test_goodput_counts_requests_meeting_every_objective() -> None:
    fast = [stream(float(i), 0.1, [0.01] * 9) for i in range(6)]  # ttft 100 ms, tpot 10 ms
    slow_first = [stream(6.0, 0.7, [0.01] * 9)]  # misses ttft
    slow_decode = [stream(7.0, 0.1, [0.08] * 9)]  # misses tpot
    failed = [Sample(start=8.0, end=8.5, status=500, error="HTTP 500: x")]
    samples = fast + slow_first + slow_decode + failed
    f = step_figures(samples, Slo.parse("ttft=500ms,tpot=50ms"))
    assert f.good_requests == 6
    assert f.goodput == pytest.approx(6 / f.duration_s)
    only_ttft = step_figures(samples, Slo.parse("ttft=500ms"))
    assert only_ttft.good_requests == 7
    itl = step_figures(samples, Slo.parse("itl=50ms"))
    assert itl.good_requests == 7


def test_sample_json_round_trip() -> None:
    s = stream(0.5, 0.1, [0.01, 0.02])
    assert Sample.from_json(s.to_json()) == s
