"""Sizing a model for llama.cpp on this machine: context per request and parallel slots from free memory.

llama.cpp keeps one KV cache of ``parallel x context`` tokens next to the (memory-mapped) weights.
The free memory left after the weights and a reserve decides how many requests can decode together
and how long each may be: as many slots as fit up to ``max_parallel`` at the target context, else one
slot with as much context as fits. Pure: the caller measures free memory and passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass

from pykaito.catalog.types import GIB
from pykaito.errors import PlanError

MIB = 1024**2
TARGET_CONTEXT = 4096
MAX_PARALLEL = 8
MIN_CONTEXT = 512
RESERVE_FIXED = 512 * MIB  # the server, llama.cpp's compute buffers and the Python runtime
RESERVE_SHARE = 0.10  # of free memory, left to the rest of the machine
ALIGN = 256


@dataclass(frozen=True)
class LocalSizing:
    """What ``kaito serve`` passes llama.cpp, and why."""

    parallel: int
    context_per_slot: int
    ctx_size: int  # KV-cache tokens in all: parallel x context_per_slot
    weights_bytes: int
    kv_bytes: int
    free_bytes: int
    reserve_bytes: int
    explanation: tuple[str, ...]


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def size_local(
    *,
    name: str,
    weights_bytes: int,
    kv_bytes_per_token: int,
    context_length: int,
    free_bytes: int,
    parallel: int | None = None,
    context_per_slot: int | None = None,
    max_parallel: int = MAX_PARALLEL,
    target_context: int = TARGET_CONTEXT,
) -> LocalSizing:
    """Parallel slots and context per slot for ``name``; PlanError when not even one short slot fits."""
    if parallel is not None and parallel < 1:
        raise PlanError(f"--parallel must be at least 1, got {parallel}")
    if context_per_slot is not None and context_per_slot < 1:
        raise PlanError(f"the context per request must be at least 1 token, got {context_per_slot}")
    reserve = RESERVE_FIXED + int(free_bytes * RESERVE_SHARE)
    budget = free_bytes - weights_bytes - reserve
    per_token = max(1, kv_bytes_per_token)
    if budget < MIN_CONTEXT * per_token:
        raise PlanError(
            f"{name} needs {_gib(weights_bytes)} for its weights plus {_gib(reserve)} of reserve "
            "and a KV cache, "
            f"but only {_gib(free_bytes)} of memory is free: close other programs, or pull a smaller "
            "quantization (`kaito pull ORG/REPO:FILE.gguf`)"
        )
    wanted = min(context_length, context_per_slot or target_context)
    lines = [
        f"free memory {_gib(free_bytes)}: weights {_gib(weights_bytes)}, reserve {_gib(reserve)} "
        f"(512 MiB + 10 % of free), leaving {_gib(budget)} for the KV cache "
        f"at {per_token / 1024:.1f} KiB per token.",
    ]
    fitting = budget // (wanted * per_token)
    if parallel is None:
        slots = int(min(max_parallel, fitting))
        if slots >= 1:
            context = wanted
            lines.append(
                f"{slots} parallel slots x {context} tokens"
                + (f" (at most {max_parallel} slots)" if slots == max_parallel else " fill the KV budget")
                + "."
            )
        else:
            slots = 1
            context = _fit_context(budget, per_token, wanted)
            lines.append(f"one slot of {wanted} tokens does not fit: 1 slot x {context} tokens.")
    else:
        slots = parallel
        context = wanted if fitting >= parallel else _fit_context(budget // parallel, per_token, wanted)
        if context < MIN_CONTEXT:
            raise PlanError(
                f"--parallel {parallel} leaves {context} tokens per request for {name} in "
                f"{_gib(budget)} of KV budget; use at most "
                f"--parallel {max(1, budget // (MIN_CONTEXT * per_token))}"
            )
        lines.append(f"{slots} parallel slots (asked) x {context} tokens.")
    if context < wanted:
        lines.append(f"context per request cut from {wanted} to {context} tokens to fit in memory.")
    kv_bytes = slots * context * per_token
    lines.append(
        f"KV cache {slots * context} tokens = {_gib(kv_bytes)}; model context limit {context_length} tokens."
    )
    return LocalSizing(
        parallel=slots,
        context_per_slot=context,
        ctx_size=slots * context,
        weights_bytes=weights_bytes,
        kv_bytes=kv_bytes,
        free_bytes=free_bytes,
        reserve_bytes=reserve,
        explanation=tuple(lines),
    )


def _fit_context(budget: int, per_token: int, wanted: int) -> int:
    fits = budget // per_token
    return int(min(wanted, fits // ALIGN * ALIGN if fits >= ALIGN else fits))
