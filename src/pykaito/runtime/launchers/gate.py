"""A gate in front of an engine that has no middleware hook (``transformers serve``).

The engine listens on 127.0.0.1 only (``UPSTREAM_PORT``); the gate listens on the pod's port
and passes every request through, after the same checks the other runtimes make:

- the API key (``KAITO_API_KEY``, compared as a digest): 401 without it, except /health and /metrics;
- a limit on generation requests in flight (POSTs under /v1/): over ``max_in_flight`` the gate
  answers 429 with Retry-After, as vLLM's middleware does when its waiting queue is full;
- JSON-only bodies (415), the body size limit (413) and slow-body deadline (408).

A client that goes away closes the engine's response at once, so the engine stops generating.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from pykaito.runtime.middleware import (
    BodyLimitMiddleware,
    JsonBodyMiddleware,
    QueueAndAuthMiddleware,
    send_error,
)

log = logging.getLogger(__name__)

UPSTREAM_PORT = 5001
MAX_IN_FLIGHT_ENV = "KAITO_MAX_IN_FLIGHT"
DEFAULT_MAX_IN_FLIGHT = 256
# hop-by-hop headers are the connection's own, never forwarded
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)

Scope = Mapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class InFlight:
    """Counts generation requests passing through the gate."""

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> float:
        return float(self.value)


class Forward:
    """The innermost ASGI app: pass a request to the engine and stream its answer back."""

    def __init__(self, upstream: str, client: httpx.AsyncClient, in_flight: InFlight) -> None:
        self.upstream = upstream.rstrip("/")
        self.client = client
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        more = scope.get("method") not in ("GET", "HEAD")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        counted = scope.get("method") == "POST" and str(scope.get("path", "")).startswith("/v1/")
        if counted:
            self.in_flight.value += 1
        try:
            await self._forward(scope, body, receive, send)
        finally:
            if counted:
                self.in_flight.value -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Close the connections to the engine when the server stops."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        url = self.upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _HOP]
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            await send_error(
                send,
                503,
                f"the model server is not answering yet ({type(exc).__name__}): retry shortly",
                "service_unavailable_error",
                code="model_loading",
                headers=[("retry-after", "1")],
            )
            return
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()  # the client left: stop reading the engine

                group.start_soon(watch)
                out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
                await send({"type": "http.response.start", "status": response.status_code, "headers": out})
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except httpx.TransportError:
            log.warning("the model server broke off a response to %s", scope["path"])
        finally:
            await response.aclose()


def gate_app(
    upstream: str,
    *,
    api_key: str | None,
    max_in_flight: int,
    max_body_bytes: int = 4 * 1024 * 1024,
    body_timeout_s: float = 30.0,
    client: httpx.AsyncClient | None = None,
) -> tuple[Any, InFlight]:
    """The gate's ASGI app in front of ``upstream`` (``http://127.0.0.1:5001``) and its in-flight count."""
    in_flight = InFlight()
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
    app: Any = Forward(upstream, http, in_flight)
    app = BodyLimitMiddleware(app, max_bytes=max_body_bytes, timeout_s=body_timeout_s)
    app = JsonBodyMiddleware(app)
    app = QueueAndAuthMiddleware(
        app, api_key=api_key, max_waiting=max_in_flight - 1, waiting=in_flight
    )  # the request being checked is not yet counted: refuse once max_in_flight are in flight
    return app, in_flight


@dataclass(frozen=True)
class GateSettings:
    host: str = "0.0.0.0"
    port: int = 5000
    api_key: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    header_timeout_s: float = 10.0


def run_gated(argv: Sequence[str], env: Mapping[str, str], settings: GateSettings) -> int:
    """Start the engine (``argv``) and serve the gate until the engine exits or a signal stops both.

    Returns the engine's exit status.
    """
    import uvicorn

    from pykaito.runtime.connections import guarded_h11

    child = subprocess.Popen(list(argv), env=dict(env))
    app, _ = gate_app(
        f"http://127.0.0.1:{UPSTREAM_PORT}", api_key=settings.api_key, max_in_flight=settings.max_in_flight
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        http=guarded_h11(settings.header_timeout_s),
    )
    server = uvicorn.Server(config)

    def watch_child() -> None:
        child.wait()
        server.should_exit = True

    threading.Thread(target=watch_child, name="engine-watch", daemon=True).start()
    log.info("gate on %s:%d in front of %s", settings.host, settings.port, " ".join(argv[:3]))
    try:
        asyncio.run(server.serve())
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return child.returncode
