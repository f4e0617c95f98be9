"""Streaming to a client that may leave: server-sent events, and awaiting work until a disconnect.

When a client goes away, whatever it was waiting for is cancelled and the engine stream it was
reading is closed at once, so its sequence and KV cache are freed for others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

T = TypeVar("T")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"


class Disconnected(Exception):
    """The client went away before the reply was ready."""


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event holding a JSON object (an error in the middle of a stream)."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def sse_chunk(model: BaseModel, *, null_usage: bool) -> bytes:
    """One streamed chunk, serialised once. ``null_usage`` writes an absent usage as ``null``.

    With ``stream_options.include_usage`` OpenAI sends ``"usage": null`` on every chunk but the
    last; the chunk models leave ``usage`` out when it is None, so it is added here.
    """
    body = model.model_dump_json().encode()
    if null_usage and getattr(model, "usage", None) is None:
        body = body[:-1] + b',"usage":null}'
    return b"data: " + body + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """Await ``work``; cancel it and raise ``Disconnected`` if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if task.cancelled():
        raise Disconnected()
    return task.result()


async def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator, even from a cancelled task."""
    aclose: Callable[[], Awaitable[None]] | None = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await aclose()
        except Exception:
            log.exception("closing the engine stream failed")


class EventStreamResponse(StreamingResponse):
    """Server-sent events that stop, and close their source, as soon as the client disconnects."""

    def __init__(self, events: AsyncGenerator[bytes, None], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await _wait_disconnect(receive)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self._events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away while we wrote
            finally:
                with anyio.CancelScope(shield=True):
                    await self._events.aclose()
                    await self._on_close()
                group.cancel_scope.cancel()
