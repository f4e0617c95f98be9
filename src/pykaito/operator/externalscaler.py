"""The KEDA external scaler: KEDA asks over gRPC, the operator answers from each replica's /metrics.

A ScaledObject's ``external`` trigger names this server (``scalerAddress``) and the set
(``inferenceSetName``, ``inferenceSetNamespace``), the metric (``metricName``, default
``vllm:num_requests_waiting``), ``threshold`` and ``activationThreshold``. For each call the scaler
finds the set's serving pods, scrapes their ``/metrics`` concurrently and reports the average per
replica (the trigger is ``metricType: Value``, so the HPA computes ``ceil(replicas x average /
threshold)``). A replica that does not answer is left out of the average and named in the log and
in :class:`Reading`; when none answers the call fails (UNAVAILABLE), so KEDA keeps the current size
or applies its fallback instead of scaling on a made-up zero.

The protocol's stubs are generated from ``kedapb/externalscaler.proto`` (scripts/gen_externalscaler.sh).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from pykaito.api.inferenceset import DEFAULT_METRIC_NAME, LABEL_CREATED_BY
from pykaito.manifests import pod as pod_shape
from pykaito.operator.kedapb import externalscaler_pb2 as pb
from pykaito.operator.kedapb import externalscaler_pb2_grpc as pb_grpc
from pykaito.operator.kubeapi import PODS, KubeApi

logger = logging.getLogger(__name__)

Replica = tuple[str, str]  # (name, base URL such as http://10.0.0.5:5000)
FindReplicas = Callable[[str, str], Awaitable[Sequence[Replica]]]
STREAM_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Reading:
    """One scrape of a set: per-replica values, the replicas that did not answer, and the average."""

    values: dict[str, float]
    failed: dict[str, str] = field(default_factory=dict)  # replica -> why

    @property
    def average(self) -> float:
        return sum(self.values.values()) / len(self.values) if self.values else 0.0


@dataclass(frozen=True)
class Trigger:
    set_name: str
    namespace: str
    metric: str
    threshold: float
    activation: float


def trigger_of(ref: Any) -> Trigger:
    meta: Mapping[str, str] = ref.scalerMetadata

    def number(key: str, default: float) -> float:
        try:
            return float(meta.get(key, default))
        except ValueError:
            return default

    return Trigger(
        set_name=meta.get("inferenceSetName") or ref.name,
        namespace=meta.get("inferenceSetNamespace") or ref.namespace or "default",
        metric=meta.get("metricName") or DEFAULT_METRIC_NAME,
        threshold=number("threshold", 10.0),
        activation=number("activationThreshold", 0.0),
    )


def metric_value(text: str, metric: str) -> float | None:
    """The sum of ``metric``'s samples in a Prometheus text exposition (None when absent)."""
    found: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                found = (found or 0.0) + float(sample.value)
    return found


async def scrape(
    replicas: Sequence[Replica], metric: str, client: httpx.AsyncClient, per_replica_seconds: float = 3.0
) -> Reading:
    """Scrape every replica's /metrics at once; replicas that fail are reported, not counted."""

    async def one(name: str, url: str) -> tuple[str, float | None, str]:
        try:
            response = await client.get(f"{url.rstrip('/')}/metrics", timeout=per_replica_seconds)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return name, None, f"no answer from {url}/metrics: {type(exc).__name__} {exc}".rstrip()
        value = metric_value(response.text, metric)
        if value is None:
            return name, None, f"{url}/metrics has no {metric}"
        return name, value, ""

    results = await asyncio.gather(*(one(name, url) for name, url in replicas))
    values = {name: value for name, value, _ in results if value is not None}
    failed = {name: why for name, value, why in results if value is None}
    for name, why in failed.items():
        logger.warning("replica %s left out of the average: %s", name, why)
    return Reading(values=values, failed=failed)


def pod_finder(kube: KubeApi) -> FindReplicas:
    """Ready serving pods of a set (pod 0 of each replica's StatefulSet), on the server port."""

    async def find(namespace: str, set_name: str) -> Sequence[Replica]:
        pods = await kube.list(PODS, namespace, labels={LABEL_CREATED_BY: set_name})
        found = []
        for p in pods:
            meta, status = p.get("metadata") or {}, p.get("status") or {}
            name = str(meta.get("name") or "")
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if name.endswith("-0") and ready and status.get("podIP"):
                found.append((name, f"http://{status['podIP']}:{pod_shape.PORT}"))
        return found

    return find


class Scaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc,unused-ignore]
    """The ExternalScaler service over a replica finder and an HTTP client."""

    def __init__(self, find: FindReplicas, client: httpx.AsyncClient | None = None) -> None:
        self._find = find
        self._client = client or httpx.AsyncClient()

    async def read(self, trigger: Trigger) -> Reading:
        replicas = await self._find(trigger.namespace, trigger.set_name)
        return await scrape(replicas, trigger.metric, self._client)

    async def _reading(self, trigger: Trigger, context: Any) -> Reading:
        reading = await self.read(trigger)
        if reading.failed and not reading.values:
            names = ", ".join(f"{k} ({v})" for k, v in sorted(reading.failed.items()))
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"no replica of {trigger.set_name} answered: {names}"
            )
        return reading

    async def IsActive(self, request: Any, context: Any) -> Any:
        trigger = trigger_of(request)
        reading = await self._reading(trigger, context)
        return pb.IsActiveResponse(result=reading.average > trigger.activation)

    async def StreamIsActive(self, request: Any, context: Any) -> AsyncIterator[Any]:
        trigger = trigger_of(request)
        while True:
            reading = await self.read(trigger)
            yield pb.IsActiveResponse(result=reading.average > trigger.activation)
            await asyncio.sleep(STREAM_INTERVAL_SECONDS)

    async def GetMetricSpec(self, request: Any, context: Any) -> Any:
        trigger = trigger_of(request)
        spec = pb.MetricSpec(
            metricName=trigger.metric,
            targetSize=max(1, round(trigger.threshold)),
            targetSizeFloat=trigger.threshold,
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: Any, context: Any) -> Any:
        trigger = trigger_of(request.scaledObjectRef)
        reading = await self._reading(trigger, context)
        average = reading.average
        logger.info(
            "%s/%s %s: average %.2f over %d replica(s)%s",
            trigger.namespace,
            trigger.set_name,
            trigger.metric,
            average,
            len(reading.values),
            f", {len(reading.failed)} not answering" if reading.failed else "",
        )
        value = pb.MetricValue(
            metricName=trigger.metric, metricValue=round(average), metricValueFloat=average
        )
        return pb.GetMetricsResponse(metricValues=[value])


async def start_server(
    scaler: Scaler, port: int, host: str = "[::]", credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve the scaler; returns the server and the bound port (``port`` 0 picks a free one)."""
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(scaler, server)  # type: ignore[no-untyped-call,unused-ignore]
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return server, bound
