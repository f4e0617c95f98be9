"""The streaming client: send one OpenAI request and time every output chunk as it arrives.

The load generator must not be the bottleneck, so the requests of a run go over a lean HTTP/1.1
client on asyncio streams (keep-alive connections, chunked or sized bodies, TLS for https) rather
than a general-purpose one: measured on a 2-core machine against an instant server, it sustains
about four times httpx's request rate. Each body is encoded once; the response is split into
``data:`` lines by hand and each event is decoded only as far as needed (the text of its first
choice and the usage report). Setup calls (``/v1/models``, ``/tokenize``) use httpx.

Every time is the event loop's clock (``loop.time()``: ``time.monotonic``, the clock
``time.perf_counter`` also reads on Linux). A chunk's arrival is the moment the loop read its last
byte from the socket (noted as the bytes come in), not the later moment the request's coroutine got
round to parsing it: with many streams on one loop, that wait would otherwise be counted as the
server's latency. Connections for a step are opened before it starts (``Endpoint.prepare``), so no
request's TTFT carries a TCP or TLS handshake the server did not cause.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, SupportsIndex
from urllib.parse import urlsplit

from pykaito.bench.samples import Sample
from pykaito.client.endpoint import normalize_endpoint
from pykaito.errors import InputError

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Request:
    """One request to send: the API path, its JSON body and the prompt's token count if known."""

    path: str
    body: dict[str, Any]
    input_tokens: int = 0


class TimedReader(asyncio.StreamReader):
    """A StreamReader that notes when each piece of data was read from the socket.

    ``took(n)`` tells it the parser consumed ``n`` more bytes; ``arrival()`` is then when the
    last of the bytes consumed so far came in.
    """

    def __init__(self, clock: Callable[[], float], limit: int) -> None:
        super().__init__(limit=limit)
        self.clock = clock
        self.fed = 0
        self.taken = 0
        self.marks: deque[tuple[int, float]] = deque()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if isinstance(data, bytes | bytearray | memoryview) and data:
            self.fed += len(data)
            self.marks.append((self.fed, self.clock()))
        super().feed_data(data)

    def took(self, data: bytes) -> bytes:
        self.taken += len(data)
        return data

    def arrival(self) -> float:
        marks = self.marks
        while len(marks) > 1 and marks[0][0] < self.taken:
            marks.popleft()
        return marks[0][1] if marks else self.clock()


Opener = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]]]
"""Opens a connection for a protocol factory, as ``loop.create_connection(factory, host, port)``."""


class _Connection:
    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: TimedReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False

    def close(self) -> None:
        self.writer.close()


class Endpoint:
    """Keep-alive connections to one server, handed to one request at a time."""

    def __init__(
        self, url: str, api_key: str = "", timeout_s: float = 600.0, opener: Opener | None = None
    ) -> None:
        parts = urlsplit(normalize_endpoint(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{url!r} is not an http(s) URL: write it like http://127.0.0.1:8080")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.ssl = ssl.create_default_context() if self.tls else None
        host = parts.netloc.rsplit("@", 1)[-1]
        self.headers = f"Host: {host}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
        if api_key:
            self.headers += f"Authorization: Bearer {api_key}\r\n"
        self.idle: list[_Connection] = []
        self.opener = opener

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        reader = TimedReader(loop.time, limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        if self.opener is not None:
            transport, _ = await self.opener(lambda: protocol)
        else:
            server_hostname = self.host if self.tls else None
            transport, _ = await loop.create_connection(
                lambda: protocol, self.host, self.port, ssl=self.ssl, server_hostname=server_hostname
            )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)  # type: ignore[arg-type]
        return _Connection(reader, writer)

    def take_idle(self) -> _Connection | None:
        """An idle connection the server has not closed yet (as far as has been seen), or None."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def prepare(self, connections: int) -> None:
        """Open connections until ``connections`` are idle, so requests do not pay for handshakes."""
        for conn in [c for c in self.idle if c.reader.at_eof()]:
            self.idle.remove(conn)
            conn.close()
        missing = connections - len(self.idle)
        if missing > 0:
            opened = await asyncio.gather(*(self._connect() for _ in range(missing)))
            for conn in opened:
                conn.used = True  # idle until used: the server may close it first, so retry then
            self.idle += opened

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def head(self, path: str, length: int) -> bytes:
        return f"POST {self.prefix}{path} HTTP/1.1\r\n{self.headers}Content-Length: {length}\r\n\r\n".encode()


class _Events:
    """Reads ``data:`` lines: chunk arrival times, the text (when kept), usage, the end."""

    __slots__ = ("done", "error", "first", "keep", "pieces", "rest", "times", "usage")

    def __init__(self, times: list[float], keep: bool, first: asyncio.Event | None = None) -> None:
        self.times = times
        self.keep = keep
        self.first = first
        self.pieces: list[str] = []
        self.rest = b""
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.error = ""

    def feed(self, data: bytes, now: float) -> None:
        lines = (self.rest + data).split(b"\n") if self.rest else data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            event = json.loads(payload)
            choices = event.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta is not None:
                    text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                else:
                    text = choice.get("text")
                if text:
                    self.times.append(now)
                    if self.keep:
                        self.pieces.append(text)
                    if self.first is not None:
                        self.first.set()
                        self.first = None
            elif "error" in event:
                error = event["error"]
                self.error = str(error.get("message", error) if isinstance(error, dict) else error)[:200]
            if event.get("usage"):
                self.usage = event["usage"]


async def _read_head(reader: TimedReader) -> tuple[int, dict[bytes, bytes]]:
    raw = reader.took(await reader.readuntil(b"\r\n\r\n"))
    lines = raw.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(
    reader: TimedReader, headers: dict[bytes, bytes], on_data: Any, step_start: float
) -> bool:
    """Read the body, calling ``on_data(bytes, arrival)`` per piece; whether the connection is reusable."""
    took = reader.took
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int(took(await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
            if size == 0:
                took(await reader.readuntil(b"\r\n"))  # trailers end with an empty line
                break
            data = took(await reader.readexactly(size + 2))
            on_data(data[:-2], reader.arrival() - step_start)
    elif b"content-length" in headers:
        remaining = int(headers[b"content-length"])
        while remaining > 0:
            data = took(await reader.read(min(remaining, READ_SIZE)))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            on_data(data, reader.arrival() - step_start)
    else:
        while data := took(await reader.read(READ_SIZE)):
            on_data(data, reader.arrival() - step_start)
        return False
    return headers.get(b"connection", b"").lower() != b"close"


async def send(
    endpoint: Endpoint,
    request: Request,
    step_start: float,
    keep_text: bool = False,
    first_token: asyncio.Event | None = None,
) -> tuple[Sample, str]:
    """Send ``request`` streaming; return its Sample (times relative to ``step_start``) and text.

    ``step_start`` is a reading of the loop's clock (``loop.time()``; ``time.perf_counter()`` reads
    the same clock on Linux). ``first_token`` is set when the first output chunk arrives.
    """
    clock = asyncio.get_running_loop().time
    content = json.dumps(request.body, separators=(",", ":")).encode()
    message = endpoint.head(request.path, len(content)) + content
    sample = Sample(start=clock() - step_start, input_tokens=request.input_tokens)
    events = _Events(sample.chunk_times, keep_text, first_token)
    conn: _Connection | None = None
    ended: float | None = None
    try:
        async with asyncio.timeout(endpoint.timeout_s):
            for attempt in (0, 1):
                # the retry always opens a new connection: the other idle ones may be as stale
                conn = endpoint.take_idle() if attempt == 0 else None
                conn = conn or await endpoint._connect()
                reused = conn.used
                conn.used = True
                conn.writer.write(message)
                try:
                    status, headers = await _read_head(conn.reader)
                    live = conn
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    conn.close()
                    conn = None
                    if not reused or attempt:
                        raise  # a kept-alive connection the server had closed is retried once
            sample.status = status
            if status != 200:
                body: list[bytes] = []
                reusable = await _read_body(live.reader, headers, lambda d, _: body.append(d), step_start)
                sample.error = f"HTTP {status}: {_error_message(b''.join(body))}"
            else:
                reusable = await _read_body(live.reader, headers, events.feed, step_start)
                ended = live.reader.arrival()
                if events.error:
                    sample.error = f"stream error: {events.error}"
                elif not events.done:
                    sample.error = "truncated: the stream ended without data: [DONE]"
            if reusable:
                endpoint.idle.append(live)
            else:
                live.close()
            conn = None
    except TimeoutError:
        sample.error = f"timeout: no complete answer within {endpoint.timeout_s:g} s"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        sample.error = f"connection: {type(exc).__name__}: {exc}"[:240]
    except (ValueError, AttributeError, TypeError, IndexError) as exc:
        sample.error = f"bad response: {exc}"[:240]
    finally:
        if conn is not None:
            conn.close()
    sample.end = (clock() if ended is None else ended) - step_start
    sample.output_tokens = len(sample.chunk_times)
    usage = events.usage
    if usage:
        if usage.get("completion_tokens") is not None:
            sample.output_tokens = int(usage["completion_tokens"])
        if usage.get("prompt_tokens") is not None:
            sample.input_tokens = int(usage["prompt_tokens"])
    return sample, "".join(events.pieces)


def _error_message(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        data = json.loads(text)
        return str(data["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return text[:200]
