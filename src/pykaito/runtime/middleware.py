"""Plain ASGI middleware: API-key checks, a waiting-queue limit, JSON-only bodies and a request-body limit.

``QueueAndAuthMiddleware`` is what the vLLM launcher passes to ``vllm serve --middleware``: vLLM
adds it with ``app.add_middleware(QueueAndAuthMiddleware)``, so every setting has a default read
from the environment (``KAITO_API_KEY``, ``KAITO_MAX_WAITING``). It imports nothing from vLLM;
the waiting count comes from a pluggable source, by default vLLM's own
``vllm:num_requests_waiting`` gauge read from the in-process Prometheus registry. That holds
for vLLM's default single API-server process; with ``--api-server-count`` above 1 vLLM keeps its
gauges in multiprocess files, and a ``waiting`` source reading those must be passed instead.

Every refusal carries an OpenAI-shaped body: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from pykaito.runtime.protocol import ErrorType, error_payload
from pykaito.runtime.settings import API_KEY_ENV

ASGIApp = Callable[..., Any]
Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

MAX_WAITING_ENV = "KAITO_MAX_WAITING"
RETRY_AFTER_ENV = "KAITO_RETRY_AFTER"
OPEN_PATHS = frozenset({"/health", "/metrics"})
WAITING_METRIC = "vllm:num_requests_waiting"


class _Env(enum.Enum):
    FROM_ENV = "from-env"


FROM_ENV = _Env.FROM_ENV


def key_digest(key: str | bytes) -> bytes:
    """The SHA-256 of a key: keys are compared as digests, so the time taken tells nothing of the length."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def bearer_matches(headers: Iterable[tuple[bytes, bytes]], key: str | bytes) -> bool:
    """Whether ``Authorization: Bearer <key>`` is present; ``key`` may be given as its ``key_digest``."""
    expected = key if isinstance(key, bytes) and len(key) == 32 else key_digest(key)
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return secrets.compare_digest(key_digest(token.strip()), expected)
    return False


def has_authorization(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"authorization" for name, _ in headers)


async def send_error(
    send: Send,
    status: int,
    message: str,
    type_: ErrorType,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Answer with an OpenAI-shaped JSON error."""
    body = json.dumps(error_payload(message, type_, param, code)).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_unauthorized(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> None:
    message = (
        "invalid API key: check the key in Authorization: Bearer <key>"
        if has_authorization(headers)
        else "missing API key: send it as Authorization: Bearer <key>"
    )
    await send_error(
        send, 401, message, "authentication_error", code="invalid_api_key",
        headers=[("www-authenticate", "Bearer")],
    )  # fmt: skip


def registry_gauge(
    name: str = WAITING_METRIC,
    registry: CollectorRegistry = REGISTRY,
    min_interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], float]:
    """A reader of a gauge (summed over its labels) from a Prometheus registry in this process.

    Only the collector that owns ``name`` is collected, at most once per ``min_interval_s``,
    so a busy server pays almost nothing per request.
    """
    restricted = registry.restricted_registry([name])
    cached = [0.0, -math.inf]

    def read() -> float:
        at = clock()
        if at - cached[1] < min_interval_s:
            return cached[0]
        total = 0.0
        for metric in restricted.collect():
            for sample in metric.samples:
                if sample.name == name:
                    total += sample.value
        cached[0], cached[1] = total, at
        return total

    return read


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from exc


class QueueAndAuthMiddleware:
    """Refuses requests without the API key (401) and new generations while the queue is full (429).

    ``api_key``: the key, ``None`` or ``""`` for an open API, or read from ``KAITO_API_KEY``.
    ``max_waiting``: refuse POSTs under ``/v1/`` while the waiting count is above this;
    ``None`` for no limit, or read from ``KAITO_MAX_WAITING``.
    ``waiting``: returns the current waiting count (default: vLLM's gauge in this process).
    """

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | _Env | None = FROM_ENV,
        max_waiting: int | _Env | None = FROM_ENV,
        waiting: Callable[[], float] | None = None,
        retry_after_s: float | _Env = FROM_ENV,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        key = (os.environ.get(API_KEY_ENV) if api_key is FROM_ENV else api_key) or None
        self._key_digest = None if key is None else key_digest(key)  # the key itself is not kept
        self.max_waiting = _env_int(MAX_WAITING_ENV) if max_waiting is FROM_ENV else max_waiting
        if retry_after_s is FROM_ENV:
            retry_after_s = float(os.environ.get(RETRY_AFTER_ENV, "1") or "1")
        self.retry_after = str(max(1, math.ceil(retry_after_s)))
        self.open_paths = frozenset(open_paths)
        self._waiting = waiting
        if self.max_waiting is not None and self._waiting is None:
            self._waiting = registry_gauge()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        if (
            self._key_digest is not None
            and path not in self.open_paths
            and not bearer_matches(headers, self._key_digest)
        ):
            await send_unauthorized(send, headers)
            return
        if self._queue_full(scope, path):
            await send_error(
                send,
                429,
                f"the server is busy: more than {self.max_waiting} requests are waiting; "
                f"retry after {self.retry_after} s",
                "rate_limit_error",
                code="queue_full",
                headers=[("retry-after", self.retry_after)],
            )
            return
        await self.app(scope, receive, send)

    def _queue_full(self, scope: Scope, path: str) -> bool:
        if self.max_waiting is None or self._waiting is None:
            return False
        if scope.get("method") != "POST" or not path.startswith("/v1/"):
            return False
        return self._waiting() > self.max_waiting

    @property
    def requires_key(self) -> bool:
        return self._key_digest is not None


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json_media_type(value: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters (charset) allowed."""
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class JsonBodyMiddleware:
    """Refuses a request with a body that is not sent as ``application/json`` with 415.

    A browser sends ``text/plain`` or form bodies to any site without asking first (no CORS
    preflight); answering only JSON keeps a web page from making a local server generate text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-type"), None)
        if content_type is None or not is_json_media_type(content_type):
            sent = (
                "no Content-Type"
                if content_type is None
                else f"Content-Type {content_type.decode('latin-1')!r}"
            )
            await send_error(
                send,
                415,
                f"the request body must be JSON sent as Content-Type: application/json, not {sent}",
                "invalid_request_error",
                code="unsupported_media_type",
            )
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, and bodies slower than ``timeout_s`` with 408.

    The body is read in full before the app runs (requests to an LLM server are small) and
    replayed to it; later ``receive`` calls go to the server, so disconnects still arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "Content-Length is not a number", "invalid_request_error")
                    return
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            await send_error(
                send,
                408,
                f"the request body did not arrive within {self.timeout_s:g} s: send it at once",
                "invalid_request_error",
                code="request_timeout",
                headers=[("connection", "close")],
            )
            return
        except _TooLarge:
            await self._too_large(send)
            return
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: Message = await receive()
            return message

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body; None if the client went away first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await send_error(
            send,
            413,
            f"request body is larger than the server's limit of {self.max_bytes} bytes",
            "invalid_request_error",
            code="request_too_large",
            headers=[("connection", "close")],
        )


class _TooLarge(Exception):
    pass
