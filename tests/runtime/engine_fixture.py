"""One real llama.cpp engine with the embedded SmolLM2 model, loaded once per test session.

Import the fixture into a test module: ``from tests.runtime.engine_fixture import engine``.
The engine's decode thread is independent of any event loop, so function-scoped test loops
can share it; each test's requests deliver to that test's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pykaito.catalog.embedded import embedded_gguf_path
from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings

MAX_RUNNING = 8
MAX_WAITING = 4
N_CTX = MAX_RUNNING * 256


@pytest.fixture(scope="session")
def engine() -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(),
            n_ctx=N_CTX,
            max_running=MAX_RUNNING,
            max_waiting=MAX_WAITING,
            prompt_chunk=128,
            threads=1,  # robust on a busy machine: no thread waits on a preempted sibling
            served_model_name="smollm2-135m-instruct",
            speculative="ngram",  # greedy output is the same with or without it; every test exercises it
            draft_cost=0.0,  # draft whether or not it pays off on this machine, so every test drafts
        )
    )
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(eng.start())
        yield eng
    finally:
        loop.run_until_complete(eng.stop())
        loop.close()
