"""CPU sizing for `kaito serve NAME`: slots and context from free memory and the model's KV size."""

from __future__ import annotations

import pytest

from pykaito.errors import PlanError
from pykaito.planner.local_cpu import size_local

GIB = 1024**3
PHI4_MINI = {"weights_bytes": 2491874272, "kv_bytes_per_token": 131072, "context_length": 131072}


@pytest.mark.parametrize(
    ("free_gib", "parallel", "slots", "context"),
    [
        pytest.param(32, None, 8, 4096, id="plenty: 8 slots of 4096"),
        pytest.param(6, None, 5, 4096, id="some: fewer slots"),
        pytest.param(3.6, None, 1, 3328, id="tight: one shorter slot"),
        pytest.param(32, 2, 2, 4096, id="asked for 2"),
        pytest.param(6, 8, 8, 2560, id="asked for 8: shorter context"),
    ],
)
def test_sizing_follows_free_memory(free_gib: float, parallel: int | None, slots: int, context: int) -> None:
    sizing = size_local(
        name="phi-4-mini-instruct", free_bytes=int(free_gib * GIB), parallel=parallel, **PHI4_MINI
    )
    assert (sizing.parallel, sizing.context_per_slot) == (slots, context)
    assert sizing.ctx_size == slots * context
    assert sizing.kv_bytes == sizing.ctx_size * 131072
    assert sizing.weights_bytes + sizing.reserve_bytes + sizing.kv_bytes <= sizing.free_bytes
    assert any("KV cache" in line for line in sizing.explanation)


def test_context_never_exceeds_the_model_limit() -> None:
    sizing = size_local(
        name="tiny", weights_bytes=10**8, kv_bytes_per_token=23040, context_length=2048, free_bytes=16 * GIB
    )
    assert sizing.context_per_slot == 2048 and sizing.parallel == 8


@pytest.mark.parametrize(
    ("free_gib", "parallel", "message"),
    [
        pytest.param(2.5, None, "only 2.50 GiB of memory is free", id="weights do not fit"),
        pytest.param(
            3.4, 8, "leaves 245 tokens per request .* use at most --parallel 3", id="too many slots"
        ),
        pytest.param(32, 0, "--parallel must be at least 1", id="zero slots"),
    ],
)
def test_sizing_refuses_with_what_to_do(free_gib: float, parallel: int | None, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        size_local(name="phi-4-mini-instruct", free_bytes=int(free_gib * GIB), parallel=parallel, **PHI4_MINI)
