"""The figures of one load step, computed from its samples as vLLM's serving benchmark defines them.

- TTFT (time to first token): from sending the request to the first chunk that carries output.
- ITL (inter-token latency): the time between two consecutive output chunks of one request; every
  gap of every successful request is one value.
- TPOT (time per output token): per request, (E2E - TTFT) / (output tokens - 1); requests with
  fewer than two output tokens have none.
- E2E latency: from sending the request to receiving its last byte.
- Request, output and total token throughput: completed requests, their output tokens, and their
  input plus output tokens, each divided by the step's duration (first request sent to last
  response ended).
- Goodput: completed requests per second that met every objective of the SLO (``ttft``, ``tpot``,
  ``itl`` as each request's worst gap, ``e2e``), as in ``--slo ttft=500ms,tpot=50ms``.
- Per-stream speed: 1 / the median TPOT, the tokens per second one user typically sees.

Percentiles interpolate linearly between the closest ranks (numpy's default), the same as vLLM's.
Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pykaito.bench.samples import Sample
from pykaito.errors import InputError

SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class Distribution:
    """Mean, percentiles and extremes of one latency, in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            count=len(values),
            mean=math.fsum(values) / len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            min=min(values),
            max=max(values),
        )


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$")


def parse_duration(text: str, where: str) -> float:
    """``500ms`` → 0.5, ``2s`` or ``2`` → 2.0 (seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"{where}: {text!r} is not a duration: write it like 500ms or 2s")
    value = float(match.group(1))
    return value / 1000.0 if match.group(2) == "ms" else value


@dataclass(frozen=True)
class Slo:
    """Service-level objectives a request must meet to count towards goodput (seconds)."""

    ttft: float | None = None
    tpot: float | None = None
    itl: float | None = None
    e2e: float | None = None

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``ttft=500ms,tpot=50ms`` → Slo(ttft=0.5, tpot=0.05)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in SLO_METRICS:
                raise InputError(
                    f"--slo: {part!r} is not an objective: write NAME=DURATION with NAME one of "
                    f"{', '.join(SLO_METRICS)}, e.g. --slo ttft=500ms,tpot=50ms"
                )
            values[name] = parse_duration(value, f"--slo {name}")
        if not values:
            raise InputError("--slo is empty: give at least one objective, e.g. --slo ttft=500ms")
        return cls(**values)

    def met_by(self, sample: Sample) -> bool:
        if not sample.ok:
            return False
        ttft = sample.ttft
        if self.ttft is not None and (ttft is None or ttft > self.ttft):
            return False
        if self.tpot is not None and (sample.tpot or 0.0) > self.tpot:
            return False
        if self.itl is not None and max(sample.itls(), default=0.0) > self.itl:
            return False
        return not (self.e2e is not None and sample.e2e > self.e2e)

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name) * 1000:g}ms" for name in SLO_METRICS if getattr(self, name)]
        return ",".join(parts)

    def to_json(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class StepFigures:
    """What one load step measured."""

    requests: int
    completed: int
    failed: int
    rate_limited: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    input_tokens: int
    output_tokens: int
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    per_stream_tokens_per_s: float
    goodput: float | None = None
    good_requests: int | None = None
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _per_stream(tpots: Sequence[float]) -> float:
    median = percentile(tpots, 50)
    return 1.0 / median if median > 0 else math.nan


def error_kind(sample: Sample) -> str:
    if sample.status and sample.status != 200:
        return f"HTTP {sample.status}"
    return sample.error.split(":", 1)[0] or "error"


def step_figures(samples: Sequence[Sample], slo: Slo | None = None) -> StepFigures:
    """The figures of one step; its duration runs from the first start to the last end."""
    done = [s for s in samples if s.ok]
    duration = (max(s.end for s in samples) - min(s.start for s in samples)) if samples else 0.0
    per_s = (lambda n: n / duration) if duration > 0 else (lambda n: math.nan)
    input_tokens = sum(s.input_tokens for s in done)
    output_tokens = sum(s.output_tokens for s in done)
    tpots = [t for s in done if (t := s.tpot) is not None]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            kind = error_kind(s)
            errors[kind] = errors.get(kind, 0) + 1
    good = sum(1 for s in done if slo.met_by(s)) if slo else None
    return StepFigures(
        requests=len(samples),
        completed=len(done),
        failed=len(samples) - len(done),
        rate_limited=sum(1 for s in samples if s.rate_limited),
        duration_s=duration,
        request_throughput=per_s(len(done)),
        output_throughput=per_s(output_tokens),
        total_token_throughput=per_s(input_tokens + output_tokens),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        ttft=Distribution.of([t for s in done if (t := s.ttft) is not None]),
        tpot=Distribution.of(tpots),
        itl=Distribution.of([gap for s in done for gap in s.itls()]),
        e2e=Distribution.of([s.e2e for s in done]),
        per_stream_tokens_per_s=_per_stream(tpots),
        goodput=per_s(good) if good is not None else None,
        good_requests=good,
        errors=errors,
    )
