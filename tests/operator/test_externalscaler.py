"""The KEDA external scaler over real gRPC, reading real ``kaito serve`` processes as the replicas."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
import httpx
import pytest

from pykaito.operator.externalscaler import Replica, Scaler, start_server, trigger_of
from pykaito.operator.kedapb import externalscaler_pb2 as pb
from pykaito.operator.kedapb import externalscaler_pb2_grpc as pb_grpc
from tests.netutil import free_port
from tests.runtime.test_cli_serve import KAITO, Served, served

pytestmark = pytest.mark.slow
THRESHOLD = 2.0
REQUESTS_PER_REPLICA = 5


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    """Two real servers decoding one request at a time, so that more requests wait in the queue."""
    logs = tmp_path_factory.mktemp("replicas")
    ports = [free_port(), free_port()]
    command = [*KAITO, "serve", "--parallel", "1", "--threads", "1"]
    with (
        served([*command, "--port", str(ports[0])], ports[0], logs / "a.log") as a,
        served([*command, "--port", str(ports[1])], ports[1], logs / "b.log") as b,
    ):
        yield [a, b]


@pytest.fixture
async def scaler(replicas: list[Served]) -> AsyncIterator[tuple[Scaler, Any, Sequence[Replica]]]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a replica that does not answer
    members: list[Replica] = [("phi-0-0", replicas[0].url), ("phi-1-0", replicas[1].url), ("phi-2-0", dead)]

    async def find(namespace: str, name: str) -> Sequence[Replica]:
        assert (namespace, name) == ("default", "phi")
        return members

    async with httpx.AsyncClient() as client:
        service = Scaler(find, client)
        server, port = await start_server(service, 0, host="127.0.0.1")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield service, pb_grpc.ExternalScalerStub(channel), members
        finally:
            await server.stop(grace=None)


def ref() -> Any:
    metadata = {
        "inferenceSetName": "phi",
        "inferenceSetNamespace": "default",
        "metricName": "vllm:num_requests_waiting",
        "threshold": str(THRESHOLD),
        "activationThreshold": "0",
    }
    return pb.ScaledObjectRef(name="phi", namespace="default", scalerMetadata=metadata)


async def metric(stub: Any) -> float:
    response = await stub.GetMetrics(
        pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="vllm:num_requests_waiting")
    )
    (value,) = response.metricValues
    assert value.metricName == "vllm:num_requests_waiting"
    return float(value.metricValueFloat)


async def load(url: str, count: int) -> None:
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Count slowly from one to one hundred in words."}],
        "max_tokens": 48,
        "temperature": 0,
    }
    async with httpx.AsyncClient(timeout=180) as client:
        await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(count)))


async def test_metric_spec_names_the_metric_and_threshold(scaler: Any) -> None:
    _, stub, _ = scaler
    spec = await stub.GetMetricSpec(ref())
    (only,) = spec.metricSpecs
    assert (only.metricName, only.targetSizeFloat, only.targetSize) == (
        "vllm:num_requests_waiting",
        THRESHOLD,
        2,
    )


async def test_load_scales_up_idle_scales_down_and_a_silent_replica_is_not_a_zero(scaler: Any) -> None:
    service, stub, members = scaler
    replicas = len(members)

    # idle: nothing waits anywhere, below the threshold and not active (scale to zero allowed)
    idle = await metric(stub)
    assert idle == 0.0
    assert (await stub.IsActive(ref())).result is False

    # load: each server decodes one request and queues the rest
    task = asyncio.gather(*(load(url, REQUESTS_PER_REPLICA) for _, url in members[:2]))
    peak, active = 0.0, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and peak <= THRESHOLD:
        peak = max(peak, await metric(stub))
        if peak > THRESHOLD:
            active = (await stub.IsActive(ref())).result
        await asyncio.sleep(0.05)
    reading = await service.read(trigger_of(ref()))
    assert peak > THRESHOLD, f"metric never went above {THRESHOLD} under load (peak {peak})"
    assert active is True
    # what the HPA does with a Value metric: ceil(current x value / target)
    desired = math.ceil(replicas * peak / THRESHOLD)
    assert desired > replicas
    # the replica that does not answer is named and left out of the average
    assert set(reading.failed) == {"phi-2-0"} and "no answer" in reading.failed["phi-2-0"]
    assert set(reading.values) == {"phi-0-0", "phi-1-0"}
    assert reading.average == sum(reading.values.values()) / 2

    await asyncio.wait_for(task, timeout=240)
    after = await metric(stub)
    assert after == 0.0 and math.ceil(replicas * after / THRESHOLD) == 0
    assert (await stub.IsActive(ref())).result is False
    print(
        f"scale decisions: idle {idle} -> peak {peak:.1f} (desired {desired} of {replicas}) -> idle {after}"
    )


async def test_no_replica_answering_is_an_error_not_a_zero(replicas: list[Served]) -> None:
    async def find(namespace: str, name: str) -> Sequence[Replica]:
        return [("phi-0-0", f"http://127.0.0.1:{free_port()}")]

    async with httpx.AsyncClient() as client:
        server, port = await start_server(Scaler(find, client), 0, host="127.0.0.1")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.ExternalScalerStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await metric(stub)
        finally:
            await server.stop(grace=None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no replica of phi answered: phi-0-0" in str(caught.value.details())
