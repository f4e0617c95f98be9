"""Handing work from the decode thread to an asyncio event loop without giving up the GIL.

``loop.call_soon_threadsafe`` wakes a loop by writing to its self-pipe with ``socket.send``,
which releases the GIL for the system call. The woken loop thread then takes the GIL first, and
the decode thread waits up to a switch interval to get it back before its next ``llama_decode``.
With eight streams that wait was most of a millisecond per decode step.

``LoopWaker`` instead queues the items and writes to an eventfd the loop watches with
``add_reader``, through a ``ctypes.PyDLL`` call that keeps the GIL. The loop wakes, waits for
the GIL, and gets it when the decode thread enters ``llama_decode``: its work overlaps the
computation instead of delaying it.

Where eventfd is missing (not Linux), ``LoopWaker`` falls back to ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import weakref
from collections.abc import Callable
from typing import Any

Item = tuple["asyncio.Queue[Any]", Any]

_EVENTFD = hasattr(os, "eventfd")
if _EVENTFD:
    _libc = ctypes.PyDLL(None)  # the process's own symbols, libc's write among them; calls keep the GIL
    _write = _libc.write
    _write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    _write.restype = ctypes.c_ssize_t
_ONE = ctypes.c_uint64(1)


def _put_all(items: list[Item]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


def _close_fd(state: list[int]) -> None:
    fd, state[0] = state[0], -1
    if fd >= 0:
        os.close(fd)


class LoopWaker:
    """Delivers ``(queue, item)`` pairs to one event loop from another thread.

    Create it on the loop's thread; ``post`` may be called from any thread. The eventfd lives as
    long as the loop: it is closed when the loop is garbage-collected.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self._pending: collections.deque[list[Item]] = collections.deque()
        self._fd = [-1]  # shared with the finalizer, which closes it
        if _EVENTFD:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._fd[0] = fd
            loop.add_reader(fd, self._drain)
            weakref.finalize(loop, _close_fd, self._fd)

    def post(self, items: list[Item]) -> bool:
        """Queue ``items`` for ``put_nowait`` on the loop; False if the loop has closed."""
        fd = self._fd[0]
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            return False
        if fd < 0:
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # closed between the check and the call
                return False
            return True
        self._pending.append(items)
        # The GIL is held from the fd check to here, so the finalizer cannot close it in between.
        _write(fd, ctypes.byref(_ONE), 8)
        return True

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd[0])
        pending = self._pending
        while pending:
            _put_all(pending.popleft())


def waker_registry() -> Callable[[asyncio.AbstractEventLoop], LoopWaker]:
    """A function giving each event loop its one ``LoopWaker``, created on first use."""
    wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = weakref.WeakKeyDictionary()

    def waker_for(loop: asyncio.AbstractEventLoop) -> LoopWaker:
        waker = wakers.get(loop)
        if waker is None:
            waker = wakers[loop] = LoopWaker(loop)
        return waker

    return waker_for
