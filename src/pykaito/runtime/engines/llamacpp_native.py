"""The llama.cpp pieces the decode thread drives: a reusable batch and per-request sampler chains.

Both are thin layers over llama-cpp-python's low-level (ctypes) API, kept apart from the
engine's control flow so each stays small.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pykaito.runtime.engine import SamplingParams
from pykaito.runtime.scheduler import StepEntry

PENALTY_LAST_N = 64  # tokens the repetition, frequency and presence penalties look back over
LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp picks a random seed


def is_plain_greedy(params: SamplingParams) -> bool:
    """Whether the next token is simply the most likely one: no grammar, no penalties, temperature 0.

    Such a request needs no sampler call per token: an argmax over its logits row gives the
    same token (the first of equal maxima, as llama.cpp's greedy sampler picks).
    """
    return (
        params.temperature <= 0
        and not params.grammar
        and params.repetition_penalty == 1.0
        and not params.frequency_penalty
        and not params.presence_penalty
    )


def build_sampler(lib: Any, vocab: Any, n_vocab: int, params: SamplingParams) -> Any:
    """A native sampler chain for one request: grammar, penalties, then greedy or top-k/p, min-p, temperature.

    The caller owns the chain and frees it with ``llama_sampler_free``. Raises ValueError for
    a grammar llama.cpp cannot parse or a non-positive repetition penalty.
    """
    chain_params = lib.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = lib.llama_sampler_chain_init(chain_params)
    add: Callable[[Any], None] = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
    if params.grammar:
        grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode("utf-8"), b"root")
        if not grammar:
            lib.llama_sampler_free(chain)
            raise ValueError("the grammar is not valid GBNF (llama.cpp could not parse it)")
        add(grammar)
    if params.repetition_penalty != 1.0 or params.frequency_penalty or params.presence_penalty:
        if params.repetition_penalty <= 0:
            lib.llama_sampler_free(chain)
            raise ValueError(f"repetition_penalty must be positive, got {params.repetition_penalty}")
        add(
            lib.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                params.repetition_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        )
    if params.temperature <= 0:
        add(lib.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(lib.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(lib.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        add(lib.llama_sampler_init_min_p(params.min_p, 1))
    add(lib.llama_sampler_init_temp(params.temperature))
    seed = LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    add(lib.llama_sampler_init_dist(seed))
    return chain


def request_rng(params: SamplingParams) -> np.random.Generator:
    """The random numbers a request's draft checks use: from its seed as llama.cpp reads it, if any."""
    seed = None if params.seed is None else params.seed & 0xFFFFFFFF
    return np.random.default_rng(None if seed in (None, LLAMA_DEFAULT_SEED) else seed)


COST_SIZES = (1, 2, 4, 8, 16, 32, 64)  # step sizes timed for the cost curve, up to the longest asked


def measure_cost_curve(
    lib: Any, ctx: Any, memory: Any, longest: int, token: int, reps: int = 2
) -> list[tuple[int, float]] | None:
    """Decode times (seconds) of steps of 1, 2, 4, ... ``longest`` tokens, timed on an idle context.

    Each step wants logits for every token, as a verification does, and runs on sequence 0,
    which is left empty; the fastest of ``reps`` runs counts (the least disturbed by other work
    on the machine). None if llama.cpp refuses a decode.
    """
    sizes = sorted({n for n in COST_SIZES if n < longest} | {longest})
    batch = lib.llama_batch_init(longest, 0, 1)

    def timed(n: int) -> float | None:
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        start = time.perf_counter()
        rc = lib.llama_decode(ctx, batch)
        elapsed = time.perf_counter() - start
        lib.llama_memory_seq_rm(memory, 0, -1, -1)
        return elapsed if rc == 0 else None

    points: list[tuple[int, float]] = []
    try:
        if timed(longest) is None:  # the first decode also warms caches and threads up
            return None
        for n in sizes:
            runs = [t for t in (timed(n) for _ in range(reps)) if t is not None]
            if not runs:
                return None
            points.append((n, min(runs)))
    finally:
        lib.llama_batch_free(batch)
    return points


class NativeBatch:
    """A reusable llama_batch over numpy arrays, filled with bulk copies instead of per-token calls."""

    def __init__(self, lib: Any, capacity: int, n_ctx_seq: int) -> None:
        self.capacity = capacity
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_ptrs = np.zeros(capacity, dtype=np.uintp)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.seq_ids = np.arange(capacity, dtype=np.int32)  # slot i's id lives at seq_ids[i]
        self._slot_addr = self.seq_ids.ctypes.data + 4 * np.arange(capacity, dtype=np.uintp)
        self._arange = np.arange(n_ctx_seq + capacity, dtype=np.int32)  # positions, sliced per entry
        self.struct = lib.llama_batch()
        self.struct.token = self.tokens.ctypes.data_as(ctypes.POINTER(lib.llama_token))
        self.struct.embd = None
        self.struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = ctypes.cast(
            self.seq_ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id))
        )
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def fill(self, entries: Sequence[StepEntry[Any]]) -> list[int]:
        """Copy a step into the batch; return each entry's output index (-1: no logits wanted).

        An entry with a draft wants logits for its last ``drafted + 1`` tokens: its output index
        is the first of them, and the others follow it.
        """
        n = 0
        outputs: list[int] = []
        for entry in entries:
            k = len(entry.tokens)
            end = n + k
            if k == 1:
                self.tokens[n] = entry.tokens[0]
                self.pos[n] = entry.start_pos
            else:
                self.tokens[n:end] = entry.tokens
                self.pos[n:end] = self._arange[entry.start_pos : entry.start_pos + k]
            self.seq_ptrs[n:end] = self._slot_addr[entry.seq.slot]
            self.logits[n:end] = 0
            if entry.wants_logits:
                first = end - 1 - entry.drafted
                self.logits[first:end] = 1
                outputs.append(first)
            else:
                outputs.append(-1)
            n = end
        self.struct.n_tokens = n
        return outputs


TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class Candidates:
    """A reusable llama_token_data_array over the whole vocabulary, for a sampler chain's transforms.

    ``transform`` runs every sampler of a request's chain but the last (the one that picks:
    greedy or dist) over one logits row, exactly as ``llama_sampler_sample`` would before picking,
    and returns the candidates left and their transformed logits. The chain's state (a grammar's
    position, the penalties' history) is not changed: ``llama_sampler_accept`` does that.
    """

    def __init__(self, lib: Any, n_vocab: int) -> None:
        self._lib = lib
        self.n_vocab = n_vocab
        self.data = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._item = ctypes.POINTER(lib.llama_token_data)
        self._base = self.data.ctypes.data_as(self._item)
        self.struct = lib.llama_token_data_array()
        self._ref = ctypes.byref(self.struct)

    def transform(self, chain: Any, logits: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(candidate ids, their logits) after all but the last sampler of ``chain`` on ``logits``."""
        lib, data, struct = self._lib, self.data, self.struct
        data["id"] = self._ids
        data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        data["p"] = 0.0
        struct.data = self._base
        struct.size = self.n_vocab
        struct.selected = -1
        struct.sorted = False
        for i in range(lib.llama_sampler_chain_n(chain) - 1):
            lib.llama_sampler_apply(lib.llama_sampler_chain_get(chain, i), self._ref)
        size = int(struct.size)
        address = ctypes.cast(struct.data, ctypes.c_void_p).value  # a sampler may point it elsewhere
        raw = (ctypes.c_uint8 * (size * TOKEN_DATA.itemsize)).from_address(address or 0)
        left = np.frombuffer(memoryview(raw), dtype=TOKEN_DATA)
        return left["id"].copy(), left["logit"].astype(np.float64)
