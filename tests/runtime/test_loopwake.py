"""Delivering items to an event loop from another thread, with and without eventfd."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import Any

import pytest

from pykaito.runtime.engines import loopwake
from pykaito.runtime.engines.loopwake import LoopWaker, waker_registry


@pytest.fixture(params=[True, False], ids=["eventfd", "call_soon_threadsafe"])
def eventfd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    use: bool = request.param
    if use and not loopwake._EVENTFD:
        pytest.skip("this platform has no eventfd")
    monkeypatch.setattr(loopwake, "_EVENTFD", use)
    return use


async def test_items_posted_from_a_thread_arrive_in_order(eventfd: bool) -> None:
    waker = LoopWaker(asyncio.get_running_loop())
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]

    def produce() -> None:
        for i in range(200):
            assert waker.post([(queues[0], i), (queues[1], -i)])

    thread = threading.Thread(target=produce)
    thread.start()
    got = [await asyncio.wait_for(queues[0].get(), 5) for _ in range(200)]
    thread.join()
    assert got == list(range(200))
    assert [queues[1].get_nowait() for _ in range(200)] == [-i for i in range(200)]


def test_posting_to_a_closed_loop_is_refused(eventfd: bool) -> None:
    loop = asyncio.new_event_loop()
    waker = LoopWaker(loop)
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop.close()
    assert not waker.post([(queue, 1)])
    assert queue.empty()


def test_the_eventfd_is_closed_with_its_loop() -> None:
    if not loopwake._EVENTFD:
        pytest.skip("this platform has no eventfd")
    loop = asyncio.new_event_loop()
    waker = LoopWaker(loop)
    fd = waker._fd[0]
    os.fstat(fd)  # open
    loop.close()
    del loop
    gc.collect()
    assert waker._fd[0] == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    assert not waker.post([])


def test_one_waker_per_loop() -> None:
    waker_for = waker_registry()
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert waker_for(first) is waker_for(first)
        assert waker_for(first) is not waker_for(second)
    finally:
        first.close()
        second.close()
