"""A faulty API server: the emulator plus what a real one does on a bad day.

:class:`FaultyKube` wraps every request of :class:`KubeEmulator` and can:

- answer an error status with headers (``429`` with ``Retry-After``, ``403``, ``500`` ...) to the next
  calls matching a method and a path pattern (any method: GET, POST, PATCH, DELETE);
- hold matching requests for a while before serving them (a slow or hung API server: client timeouts);
- drop every open watch stream at once (a restarted API server or a broken connection);
- answer the next watches that resume from a resourceVersion with ``410 Gone`` ("too old"), as the
  API server does after compaction, inside the stream, so clients must list again;
- record every request (time, method, path) and tell a listener about each write, so a test can act
  (kill the operator) at a chosen point of a reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
from kmock._internal import rendering

from tests.operator.kube_emulator import KubeEmulator

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REASONS = {
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Answer:
    """Answer ``status`` (with ``headers``) to the next ``remaining`` matching calls."""

    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)
    hits: list[float] = field(default_factory=list)  # monotonic times of the calls it answered


@dataclass
class Delay:
    """Hold the next ``remaining`` matching calls for ``seconds`` before serving them."""

    method: str
    path: re.Pattern[str]
    seconds: float
    remaining: int
    released: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop holding any call


@dataclass(frozen=True)
class Seen:
    at: float
    method: str
    path: str
    watch: bool


def _matches(method: str, pattern: re.Pattern[str], request: rendering.Request) -> bool:
    return method in {"*", str(request.method.value).upper()} and bool(pattern.search(request.url.path))


def _status(status: int, message: str) -> dict[str, Any]:
    reason = REASONS.get(status, "Injected")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status,
    }


@attrs.define(kw_only=True)
class FaultyKube(KubeEmulator):
    """The emulator with the faults above; everything else is :class:`KubeEmulator` unchanged."""

    answers: list[Answer] = attrs.field(factory=list)
    delays: list[Delay] = attrs.field(factory=list)
    seen: list[Seen] = attrs.field(factory=list)
    gone_watches: int = 0  # how many resuming watches still get 410 Gone
    on_write: Callable[[str, str], None] | None = None  # (method, path), called before each write
    _watchers: set[asyncio.Task[Any]] = attrs.field(factory=set)

    def answer_next(
        self,
        method: str,
        path: str,
        status: int,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Answer ``status`` to the next ``count`` calls (``method`` "*" for any) whose path matches."""
        answer = Answer(method.upper(), re.compile(path), status, count, dict(headers or {}))
        self.answers.append(answer)
        return answer

    def delay_next(self, method: str, path: str, seconds: float, count: int = 1) -> Delay:
        delay = Delay(method.upper(), re.compile(path), seconds, count)
        self.delays.append(delay)
        return delay

    def drop_watches(self) -> int:
        """Cut every open watch stream mid-flight; returns how many were cut."""
        tasks = [t for t in self._watchers if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    def watch_count(self) -> int:
        return sum(1 for t in self._watchers if not t.done())

    def requests(self, method: str, path: str) -> list[Seen]:
        pattern = re.compile(path)
        return [s for s in self.seen if s.method == method.upper() and pattern.search(s.path)]

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        method = str(request.method.value).upper()
        watch = method == "GET" and request.params.get("watch", "").lower() in {"true", "1"}
        self.seen.append(Seen(time.monotonic(), method, request.url.path, watch))
        if method in WRITES and self.on_write is not None:
            self.on_write(method, request.url.path)
        for delay in self.delays:
            if delay.remaining > 0 and _matches(delay.method, delay.path, request):
                delay.remaining -= 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(delay.released.wait(), delay.seconds)
                break
        for answer in self.answers:
            if answer.remaining > 0 and _matches(answer.method, answer.path, request):
                answer.remaining -= 1
                answer.hits.append(time.monotonic())
                body = _status(answer.status, f"injected {answer.status} for {method} {request.url.path}")
                return aiohttp.web.json_response(body, status=answer.status, headers=answer.headers)
        if watch:
            return await self._faulty_watch(request)
        return await super()._handle(request)

    async def _faulty_watch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        since = request.params.get("resourceVersion", "")
        if self.gone_watches > 0 and since and since != "0":
            self.gone_watches -= 1
            assert request._raw_request is not None
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request._raw_request)
            event = {"type": "ERROR", "object": _status(410, f"too old resource version: {since}")}
            await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        task = asyncio.ensure_future(super()._handle(request))
        self._watchers.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                # dropped on purpose: end the connection without a clean end of stream
                assert request._raw_request is not None
                transport = request._raw_request.transport
                if transport is not None:
                    transport.abort()
                raise ConnectionResetError("watch dropped") from None
            raise
        finally:
            self._watchers.discard(task)


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


__all__ = ["Answer", "Delay", "FaultyKube", "Seen"]
