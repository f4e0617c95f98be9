"""Running ``kaito bench`` against an in-memory server on a virtual clock: exact timings.

``VirtualClockLoop`` is an asyncio event loop whose clock only moves when nothing is ready to run:
then it jumps to the next timer. Client and server share the loop and talk through in-memory
transports (``memory_opener``), so a server that sleeps 100 ms is seen 100 ms later, exactly,
however busy the machine is, and every figure can be compared with its exact expected value.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pykaito.bench.sse import Opener

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise RuntimeError("virtual clock: nothing is scheduled and nothing can arrive (a deadlock)")
        self.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` starts at 0 and jumps from timer to timer."""

    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now

    def advance(self, seconds: float) -> None:
        """Move the clock on as if the running callback had taken ``seconds`` of CPU time."""
        self._virtual.now += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(coro)


class _MemoryTransport(asyncio.Transport):
    """One end of an in-memory byte pipe: what one end writes, the other receives on the next turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.peer: _MemoryTransport | None = None
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing and self.peer is not None and not self.peer.closing:
            self.loop.call_soon(self.peer.protocol.data_received, bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.loop.call_soon(self.protocol.connection_lost, None)
        if self.peer is not None and not self.peer.closing:
            self.loop.call_soon(self.peer.protocol.eof_received)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False


def memory_opener(handler: Handler) -> Opener:
    """Connections that each run ``handler(reader, writer)`` as the server, in memory."""

    async def open_connection(
        factory: Callable[[], asyncio.Protocol],
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        client = factory()
        server = asyncio.StreamReaderProtocol(asyncio.StreamReader(), handler)
        ours, theirs = _MemoryTransport(loop, client), _MemoryTransport(loop, server)
        ours.peer, theirs.peer = theirs, ours
        server.connection_made(theirs)
        client.connection_made(ours)
        return ours, client

    return open_connection
