"""One measured request, and the description of a load step.

Times are seconds on the client's event loop clock (``loop.time()``, monotonic), relative to the
start of the step, so a run's samples can be laid on one time line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Sample:
    """One request: when it started, when each output chunk arrived, how it ended.

    ``chunk_times`` holds the arrival time of every chunk that carried output text (relative to the
    step start), so TTFT is ``chunk_times[0] - start`` and the inter-token latencies are their
    differences. ``output_tokens`` is the server's usage count when it reports one, else the
    number of those chunks.
    """

    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    status: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def rate_limited(self) -> bool:
        return self.status == 429

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (E2E - TTFT) / (output tokens - 1)."""
        ttft = self.ttft
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - ttft) / (self.output_tokens - 1)

    def itls(self) -> list[float]:
        t = self.chunk_times
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    def to_json(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "chunk_times": [round(x, 6) for x in self.chunk_times],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            chunk_times=[float(x) for x in data.get("chunk_times", [])],
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            status=int(data.get("status", 0)),
            error=str(data.get("error", "")),
        )
