"""The plain ASGI middleware that vLLM runs with (API key, waiting-queue limit) and the body limit."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge

from pykaito.runtime.middleware import (
    BodyLimitMiddleware,
    QueueAndAuthMiddleware,
    bearer_matches,
    registry_gauge,
)
from tests.runtime.conftest import assert_error


class Recorder:
    """An ASGI app that answers 200 with what it received."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        self.calls.append((scope["method"], scope["path"], body))
        payload = json.dumps({"ok": True, "bytes": len(body)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class Waiting:
    """A settable waiting count (the pluggable source)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.value


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vllm")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([(b"authorization", b"Bearer k3y")], True, id="bearer"),
        pytest.param([(b"Authorization", b"bearer k3y")], True, id="case-insensitive-scheme"),
        pytest.param([(b"authorization", b"Bearer k3y ")], True, id="trailing-space"),
        pytest.param([(b"authorization", b"Bearer k3")], False, id="prefix"),
        pytest.param([(b"authorization", b"Bearer k3yy")], False, id="longer"),
        pytest.param([(b"authorization", b"Basic k3y")], False, id="basic"),
        pytest.param([(b"authorization", b"k3y")], False, id="no-scheme"),
        pytest.param([(b"x-api-key", b"k3y")], False, id="other-header"),
        pytest.param([], False, id="none"),
    ],
)
def test_bearer_matches(headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert bearer_matches(headers, "k3y") is expected


async def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_API_KEY", "from-env")
    monkeypatch.delenv("KAITO_MAX_WAITING", raising=False)
    inner = Recorder()
    middleware = QueueAndAuthMiddleware(inner)  # how vLLM builds it: no arguments
    assert middleware.requires_key
    assert middleware.max_waiting is None
    async with client_for(middleware) as client:
        error = assert_error(await client.post("/v1/chat/completions", json={}), 401, text="missing")
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        wrong = await client.get("/v1/models", headers={"authorization": "Bearer other"})
        assert_error(wrong, 401, text="invalid")
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert (
            await client.get("/v1/models", headers={"authorization": "Bearer from-env"})
        ).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert_error(await client.get("/health/"), 401)
    assert [(m, p) for m, p, _ in inner.calls] == [
        ("GET", "/v1/models"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    ]


async def test_no_key_means_an_open_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAITO_API_KEY", raising=False)
    async with client_for(QueueAndAuthMiddleware(Recorder())) as client:
        assert (await client.post("/v1/completions", json={})).status_code == 200
    async with client_for(QueueAndAuthMiddleware(Recorder(), api_key="")) as client:
        assert (await client.post("/v1/completions", json={})).status_code == 200


async def test_429_while_the_waiting_queue_is_over_the_limit() -> None:
    waiting = Waiting(0)
    inner = Recorder()
    middleware = QueueAndAuthMiddleware(
        inner, api_key=None, max_waiting=4, waiting=waiting, retry_after_s=2.5
    )
    async with client_for(middleware) as client:
        assert (await client.post("/v1/chat/completions", json={"a": 1})).status_code == 200
        waiting.value = 4  # at the limit: still admitted
        assert (await client.post("/v1/chat/completions", json={"a": 1})).status_code == 200
        waiting.value = 5
        response = await client.post("/v1/chat/completions", json={"a": 1})
        error = assert_error(response, 429, text="more than 4 requests are waiting")
        assert error["type"] == "rate_limit_error"
        assert error["code"] == "queue_full"
        assert response.headers["retry-after"] == "3"
        # Reads, health checks and scrapes still pass while the queue is full.
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        waiting.value = 0
        assert (await client.post("/v1/completions", json={"a": 1})).status_code == 200
    assert len([c for c in inner.calls if c[0] == "POST"]) == 3
    assert inner.calls[-1][2] == b'{"a":1}'  # the body reaches the app intact


async def test_auth_is_checked_before_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    waiting = Waiting(100)
    middleware = QueueAndAuthMiddleware(Recorder(), api_key="k", max_waiting=1, waiting=waiting)
    async with client_for(middleware) as client:
        assert_error(await client.post("/v1/chat/completions", json={}), 401)
        assert waiting.reads == 0
        authorized = await client.post("/v1/chat/completions", json={}, headers={"authorization": "Bearer k"})
        assert_error(authorized, 429)


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_MAX_WAITING", "256")
    monkeypatch.setenv("KAITO_RETRY_AFTER", "5")
    middleware = QueueAndAuthMiddleware(Recorder(), waiting=Waiting())
    assert middleware.max_waiting == 256
    assert middleware.retry_after == "5"
    monkeypatch.setenv("KAITO_MAX_WAITING", "lots")
    with pytest.raises(ValueError, match="KAITO_MAX_WAITING"):
        QueueAndAuthMiddleware(Recorder())


def test_registry_gauge_reads_the_vllm_gauge_summed_and_cached() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("vllm:num_requests_waiting", "waiting", ["model_name", "engine"], registry=registry)
    Gauge("vllm:num_requests_running", "running", ["model_name"], registry=registry).labels("m").set(50)
    gauge.labels("m", "0").set(3)
    gauge.labels("m", "1").set(4)
    now = [100.0]
    read = registry_gauge(registry=registry, min_interval_s=1.0, clock=lambda: now[0])
    assert read() == 7.0
    gauge.labels("m", "0").set(10)
    assert read() == 7.0  # cached within the interval
    now[0] += 1.5
    assert read() == 14.0


def test_registry_gauge_without_the_metric_reads_zero() -> None:
    assert registry_gauge(registry=CollectorRegistry())() == 0.0


async def test_default_source_is_the_in_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("vllm:num_requests_waiting", "waiting", ["model_name"], registry=registry)
    source = registry_gauge(registry=registry, min_interval_s=0.0)
    middleware = QueueAndAuthMiddleware(Recorder(), api_key=None, max_waiting=2, waiting=source)
    async with client_for(middleware) as client:
        gauge.labels("m").set(2)
        assert (await client.post("/v1/completions", json={})).status_code == 200
        gauge.labels("m").set(3)
        assert_error(await client.post("/v1/completions", json={}), 429)


async def test_body_limit_by_content_length_and_by_bytes() -> None:
    inner = Recorder()
    async with client_for(BodyLimitMiddleware(inner, max_bytes=100)) as client:
        assert (await client.post("/x", content=b"a" * 100)).json() == {"ok": True, "bytes": 100}
        error = assert_error(await client.post("/x", content=b"a" * 101), 413, text="100 bytes")
        assert error["code"] == "request_too_large"

        async def chunks() -> Any:
            for _ in range(5):
                yield b"b" * 30

        assert_error(await client.post("/x", content=chunks()), 413)
        bad = await client.post("/x", content=b"{}", headers={"content-length": "two"})
        assert_error(bad, 400, text="Content-Length")
        assert (await client.get("/x")).status_code == 200
    assert [len(body) for _, _, body in inner.calls] == [100, 0]
