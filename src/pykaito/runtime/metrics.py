"""Prometheus metrics under vLLM's names, so dashboards and autoscalers written for vLLM work unchanged.

Each server owns its own ``CollectorRegistry``. Queue gauges are read from the engine at scrape
time by a custom collector; latencies and token counters are recorded per request by
``RequestTimer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pykaito.runtime.engine import EngineStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket boundaries.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


class EngineStatsCollector(Collector):
    """Gauges read from ``engine.stats()`` each time /metrics is scraped."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self._model_name = model_name
        self._stats = stats

    def _families(self, stats: EngineStats | None) -> list[Metric]:
        label = ["model_name"]
        gauges = [
            GaugeMetricFamily(
                "vllm:num_requests_running", "Number of requests in model execution batches.", labels=label
            ),
            GaugeMetricFamily(
                "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=label
            ),
            GaugeMetricFamily(
                "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=label
            ),
        ]
        if stats is not None:
            values = (stats.running, stats.waiting, stats.kv_cache_usage)
            for family, value in zip(gauges, values, strict=True):
                family.add_metric([self._model_name], float(value))
        families: list[Metric] = list(gauges)
        if stats is None or stats.spec_decode is not None:
            families += self._spec_families(stats)
        return families

    def _spec_families(self, stats: EngineStats | None) -> list[Metric]:
        """vLLM's speculative-decoding counters (only when the engine speculates)."""
        label = ["model_name"]
        totals = [
            CounterMetricFamily(
                "vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", labels=label
            ),
            CounterMetricFamily("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", labels=label),
            CounterMetricFamily(
                "vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.", labels=label
            ),
        ]
        per_pos = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Accepted tokens per draft position.",
            labels=["model_name", "position"],
        )
        spec = stats.spec_decode if stats is not None else None
        if spec is not None:
            values = (spec.drafts, spec.draft_tokens, spec.accepted_tokens)
            for family, value in zip(totals, values, strict=True):
                family.add_metric([self._model_name], float(value))
            for pos, count in enumerate(spec.accepted_per_pos):
                per_pos.add_metric([self._model_name, str(pos)], float(count))
        return [*totals, per_pos]

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._stats())


class ServerMetrics:
    """The metrics of one server, in their own registry."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineStatsCollector(model_name, stats))
        labels = ["model_name"]
        r = self.registry
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.prefix_cache_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            labels,
            registry=r,
        )
        self.prefix_cache_hits = Counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            labels,
            registry=r,
        )
        self.request_success = Counter(
            "vllm:request_success",
            "Count of finished requests, by finish reason.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.time_per_output_token = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed, per request.",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed, per request.",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """Records one request's latencies and token counts as its deltas arrive."""

    def __init__(
        self,
        metrics: ServerMetrics,
        prompt_tokens: int,
        *,
        cached_tokens: int = 0,
        start: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._m = metrics
        self._clock = clock
        self._label = metrics.model_name
        self.start = clock() if start is None else start
        self.first_token_at: float | None = None
        self._last = self.start
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.generated = 0
        self.finished = False
        metrics.prompt_tokens.labels(self._label).inc(prompt_tokens)
        metrics.prefix_cache_queries.labels(self._label).inc(prompt_tokens)
        metrics.prefix_cache_hits.labels(self._label).inc(cached_tokens)
        metrics.request_prompt_tokens.labels(self._label).observe(prompt_tokens)

    def tokens(self, count: int) -> None:
        """``count`` new tokens arrived."""
        if count <= 0:
            return
        at = self._clock()
        if self.first_token_at is None:
            self.first_token_at = at
            self._m.time_to_first_token.labels(self._label).observe(at - self.start)
            count_after_first = count - 1
        else:
            count_after_first = count
        if count_after_first > 0:
            per_token = (at - self._last) / count_after_first
            histogram = self._m.time_per_output_token.labels(self._label)
            for _ in range(count_after_first):
                histogram.observe(per_token)
        self._last = at
        self.generated += count
        self._m.generation_tokens.labels(self._label).inc(count)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.start

    def finish(self, reason: str) -> float:
        """The request ended (``stop``, ``length`` or ``abort``); returns its latency in seconds."""
        elapsed = self._clock() - self.start
        if self.finished:
            return elapsed
        self.finished = True
        self._m.e2e_latency.labels(self._label).observe(elapsed)
        self._m.request_success.labels(self._label, reason).inc()
        self._m.request_generation_tokens.labels(self._label).observe(self.generated)
        return elapsed
