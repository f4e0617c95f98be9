"""Continuous batching: which sequences run, and which tokens go into the next decode step.

The scheduler is pure bookkeeping with no inference library behind it, so its rules are
tested on their own. The engine's decode thread drives it:

    released = scheduler.admit(release)   # free finished slots, move waiting -> running
    step = scheduler.plan()               # one decode step for every running sequence
    ... decode, sample ...
    scheduler.finish(seq)                 # when a sequence is done

Callers on other threads only ``submit``, ``cancel`` and ``abandon`` (``cancel`` without the
lock, for finalizers: a ``__del__`` may run on a thread that holds the lock). Rules:

- a bounded waiting queue: ``submit`` raises QueueFullError at once when ``max_running``
  requests run and ``max_waiting`` more wait (a request that a free slot will take at the
  next step does not count as waiting);
- at most ``max_running`` sequences hold a slot (a KV-cache sequence id); a new one gets the
  lowest free slot, which keeps the running slots contiguous (llama.cpp splits a batch of
  non-contiguous sequence ids into several micro-batches);
- every step carries one token for each decoding sequence plus at most ``prompt_chunk``
  prompt tokens, handed to the prefilling sequences with the fewest prompt tokens left
  first, so a long prompt never stalls the running streams for more than one chunk and a
  short prompt is not queued behind a long one;
- prefix caching: a finished sequence leaves its tokens in its slot's KV cache; a new sequence
  takes the free slot whose cached tokens share the longest prefix with its prompt and starts
  after that prefix (``prepare`` trims the rest of the slot's cache); a prompt that shares little
  with any slot goes where it overwrites the least (an empty slot before another conversation's),
  so several conversations stay cached. The lowest free slot is left for another only when that
  is worth at least ``MIN_PREFIX_GAIN`` more tokens, and at least one prompt token is always
  computed, since its logits give the first new token;
- holes are closed: when a sequence between others finishes and nobody takes its slot, the
  one in the highest slot moves down into it, so one decode step stays one micro-batch.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pykaito.errors import QueueFullError

T = TypeVar("T")

MIN_PREFIX_GAIN = 16  # tokens of extra cached prefix worth leaving the running slots with a hole
EVICTION_WEIGHT = 0.5  # what overwriting a cached token costs, against reusing one

_arrivals = itertools.count()


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading items ``a`` and ``b`` share, at most ``limit`` (slice comparisons run in C)."""
    if a[:limit] == b[:limit]:
        return max(limit, 0)
    low, high = 0, limit - 1  # a[:low] == b[:low] holds; a[:high + 1] != b[:high + 1]
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(eq=False)
class SequenceState(Generic[T]):
    """One request on its way through the engine; ``payload`` is the engine's own state."""

    request_id: str
    prompt: Sequence[int]
    payload: T
    slot: int = -1
    n_past: int = 0  # tokens already in the KV cache
    next_token: int | None = None  # sampled but not yet fed back
    cancelled: bool = False
    arrival: int = field(default_factory=lambda: next(_arrivals))
    generated: list[int] = field(default_factory=list)  # tokens sampled so far, in order
    cached: int = 0  # prompt tokens found in the slot's KV cache at admission

    def feed(self, token: int) -> None:
        """``token`` was sampled and goes into the next decode step."""
        self.next_token = token
        self.generated.append(token)

    def tokens_in_cache(self) -> list[int]:
        """The tokens whose keys and values this sequence's slot holds (the first ``n_past``)."""
        n_prompt = len(self.prompt)
        if self.n_past <= n_prompt:
            return list(self.prompt[: self.n_past])
        return [*self.prompt, *self.generated[: self.n_past - n_prompt]]

    @property
    def prompt_left(self) -> int:
        return len(self.prompt) - self.n_past

    @property
    def decoding(self) -> bool:
        return self.next_token is not None


@dataclass(frozen=True)
class StepEntry(Generic[T]):
    """The tokens one sequence contributes to a decode step."""

    seq: SequenceState[T]
    tokens: Sequence[int]
    start_pos: int
    wants_logits: bool  # the last token's logits are needed to sample the next token
    drafted: int = (
        0  # the last ``drafted`` tokens are a speculative draft; logits for each and the one before
    )


@dataclass
class DraftStep:
    """What a step being planned holds so far, for ``Propose`` to size a draft against.

    ``sequences``: decoding sequences (a next token each); ``drafted``: draft tokens planned so
    far; ``left``: draft tokens the step may still carry (the scheduler keeps these three);
    ``expected``: generated tokens it is expected to yield, one per decoding sequence plus what
    ``Propose`` adds for the draft tokens it expects to stand.
    """

    sequences: int
    drafted: int
    expected: float
    left: int


Propose = Callable[[SequenceState[T], DraftStep], Sequence[int]]


class Scheduler(Generic[T]):
    """Thread-safe admission and step planning for up to ``max_running`` sequences."""

    def __init__(
        self,
        *,
        max_running: int,
        max_waiting: int,
        prompt_chunk: int,
        batch_size: int,
        prefix_cache: bool = True,
    ) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {max_running}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must not be negative, got {max_waiting}")
        if batch_size <= max_running:
            raise ValueError(
                f"batch_size ({batch_size}) must exceed max_running ({max_running}) so prompts can advance"
            )
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.prompt_chunk = max(1, min(prompt_chunk, batch_size - max_running))
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self._cache: dict[int, list[int]] = {}  # free slot -> the tokens its KV cache still holds
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._waiting: deque[SequenceState[T]] = deque()
        self._running: dict[int, SequenceState[T]] = {}
        self._free: list[int] = list(range(max_running))
        heapq.heapify(self._free)
        self._released: list[SequenceState[T]] = []
        self._abandoned: deque[SequenceState[T]] = deque()  # appended without the lock
        self._closed = False

    # -- any thread --------------------------------------------------------------------------

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def kv_tokens(self) -> int:
        """Tokens the running sequences hold in the KV cache."""
        with self._lock:
            return sum(seq.n_past for seq in self._running.values())

    def submit(self, seq: SequenceState[T]) -> None:
        """Queue a sequence; raises QueueFullError when every slot and waiting place is taken."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if len(self._running) + len(self._waiting) >= self.max_running + self.max_waiting:
                raise QueueFullError(
                    f"{len(self._running)} requests are running (max_running={self.max_running}) and "
                    f"{len(self._waiting)} are waiting (max_waiting={self.max_waiting}): "
                    "retry shortly or raise max_waiting",
                    retry_after=1.0,
                )
            self._waiting.append(seq)
            self._work.notify()

    def cancel(self, seq: SequenceState[T]) -> bool:
        """Drop a waiting or running sequence; False if it had already finished or been dropped."""
        with self._lock:
            if seq.cancelled:
                return False
            if self._running.get(seq.slot) is seq:
                del self._running[seq.slot]
            else:
                try:
                    self._waiting.remove(seq)
                except ValueError:
                    return False
            seq.cancelled = True
            self._released.append(seq)
            self._work.notify()
            return True

    def abandon(self, seq: SequenceState[T]) -> None:
        """Cancel ``seq`` at the decode thread's next turn; takes no lock, so a finalizer may call it."""
        self._abandoned.append(seq)  # deque.append is atomic

    def _drain_abandoned(self) -> None:
        while self._abandoned:
            self.cancel(self._abandoned.popleft())

    def close(self) -> list[SequenceState[T]]:
        """Refuse new work; return every sequence still queued, running or awaiting release."""
        with self._lock:
            self._closed = True
            left = [*self._released, *self._running.values(), *self._waiting]
            self._released.clear()
            self._running.clear()
            self._waiting.clear()
            self._work.notify_all()
            return left

    # -- the decode thread -------------------------------------------------------------------

    def finish(self, seq: SequenceState[T]) -> None:
        """A running sequence is done (stop, length or error): its slot is released."""
        with self._lock:
            if self._running.get(seq.slot) is seq:
                del self._running[seq.slot]
                self._released.append(seq)

    def wait_for_work(self, timeout: float) -> bool:
        """Block until something runs, waits or awaits release; False when closed or timed out."""
        self._drain_abandoned()
        with self._lock:
            if not (self._running or self._waiting or self._released or self._closed):
                self._work.wait(timeout)
            return not self._closed and bool(self._running or self._waiting or self._released)

    def admit(
        self,
        release: Callable[[SequenceState[T]], None],
        move: Callable[[SequenceState[T], int], None] | None = None,
        prepare: Callable[[SequenceState[T]], None] | None = None,
    ) -> list[SequenceState[T]]:
        """Release finished sequences, then fill free slots.

        ``release`` frees a finished sequence's resources; with prefix caching off it also
        clears its KV cache. A newly admitted sequence has its slot and ``n_past`` (the prompt
        tokens already cached there) set, and ``prepare`` removes whatever else the slot's KV
        cache holds from position ``n_past`` on. With ``move``, a hole (a free slot between
        running ones) is closed: the sequence in the highest slot moves into the lowest hole
        (``move`` copies its KV cache there and clears the old slot), one per call.
        """
        self._drain_abandoned()
        with self._lock:
            released, self._released = self._released, []
        for seq in released:
            release(seq)
        admitted: list[SequenceState[T]] = []
        with self._lock:
            for seq in released:
                if seq.slot >= 0:
                    heapq.heappush(self._free, seq.slot)
                    self._cache[seq.slot] = seq.tokens_in_cache() if self.prefix_cache else []
                    seq.slot = -1
            while self._waiting and self._free:
                seq = self._waiting.popleft()
                slot, reuse = self._pick_slot(seq.prompt)
                self._take(slot)
                seq.slot, seq.n_past, seq.cached = slot, reuse, reuse
                self._running[slot] = seq
                admitted.append(seq)
            low = self._hole() if move is not None else None
            if move is not None and low is not None:
                top = max(self._running)
                self._take(low)
                seq = self._running.pop(top)
                move(seq, low)
                self._cache[top] = []
                seq.slot = low
                self._running[low] = seq
                heapq.heappush(self._free, top)
        if prepare is not None:
            for seq in admitted:
                prepare(seq)
        return admitted

    def _take(self, slot: int) -> None:
        """Mark a free slot as used; whatever it had cached is being overwritten or trimmed."""
        self._free.remove(slot)
        heapq.heapify(self._free)
        self._cache.pop(slot, None)

    def _hole(self) -> int | None:
        """The lowest free slot between running ones, if the running slots are not contiguous."""
        if not self._running:
            return None
        bottom, top = min(self._running), max(self._running)
        if top - bottom + 1 == len(self._running):
            return None
        # A sequence cancelled from another thread while ``admit`` released others has left
        # ``_running`` but its slot is not free yet: that gap is closed at a later call.
        gaps = [slot for slot in self._free if bottom < slot < top]
        return min(gaps) if gaps else None

    def cached_tokens(self, slot: int) -> list[int]:
        """What the KV cache of a free slot holds (empty for a running or never used slot)."""
        with self._lock:
            return list(self._cache.get(slot, ()))

    def _pick_slot(self, prompt: Sequence[int]) -> tuple[int, int]:
        """The free slot for ``prompt`` and how many of its tokens that slot has cached already.

        A slot's worth is the prompt tokens it has cached, less ``EVICTION_WEIGHT`` for each cached
        token the prompt would overwrite (another conversation's, which its next turn would reuse).
        The lowest free slot wins unless another is worth ``MIN_PREFIX_GAIN`` more.
        """
        tokens = list(prompt)
        worth: dict[int, tuple[float, int]] = {}  # slot: (its worth, the prompt tokens it holds)
        for slot in self._free:
            reuse = self._reusable(slot, tokens)
            worth[slot] = (reuse - EVICTION_WEIGHT * (len(self._cache.get(slot) or ()) - reuse), reuse)
        lowest = self._free[0]
        best = max(worth, key=lambda slot: (worth[slot][0], -slot))
        if worth[best][0] < worth[lowest][0] + MIN_PREFIX_GAIN:
            best = lowest
        return best, worth[best][1]

    def _reusable(self, slot: int, prompt: list[int]) -> int:
        """Tokens of ``prompt`` the slot's cache holds, leaving the last prompt token to compute."""
        cached = self._cache.get(slot)
        if not cached:
            return 0
        return common_prefix(cached, prompt, min(len(cached), len(prompt) - 1))

    def plan(
        self,
        propose: Propose[T] | None = None,
        *,
        max_speculating: int = 0,
        draft_budget: int = 0,
    ) -> list[StepEntry[T]]:
        """The next decode step: one token per decoding sequence, then a share of prompt tokens.

        With ``propose``, while at most ``max_speculating`` sequences decode, each may add draft
        tokens after its next token: ``propose(seq, step)`` returns at most ``step.left`` of them
        and adds the tokens it expects to stand to ``step.expected``; the step carries at most
        ``draft_budget`` in all (within the batch size).
        """
        with self._lock:
            running = list(self._running.values())
        entries: list[StepEntry[T]] = []
        decoding = [seq for seq in running if seq.next_token is not None]
        prefilling = [seq for seq in running if seq.next_token is None and seq.prompt_left > 0]
        speculate = propose is not None and len(decoding) <= max_speculating
        drafts_left = min(draft_budget, self.batch_size - len(decoding) - 1) if speculate else 0
        step = DraftStep(len(decoding), 0, float(len(decoding)), drafts_left)
        used = 0
        for seq in decoding:
            assert seq.next_token is not None
            draft: Sequence[int] = ()
            if step.left > 0 and propose is not None:
                draft = propose(seq, step)[: step.left]
                step.drafted += len(draft)
                step.left -= len(draft)
            entries.append(StepEntry(seq, (seq.next_token, *draft), seq.n_past, True, len(draft)))
            used += 1 + len(draft)
        budget = min(self.prompt_chunk, self.batch_size - used)
        prefilling.sort(key=lambda s: (s.prompt_left, s.arrival))
        for seq in prefilling:
            if budget <= 0:
                break
            take = min(seq.prompt_left, budget)
            start = seq.n_past
            entries.append(StepEntry(seq, seq.prompt[start : start + take], start, take == seq.prompt_left))
            budget -= take
        entries.sort(key=lambda e: e.seq.slot)
        return entries
