"""Draft-free speculative decoding: n-gram drafts from a sequence's own tokens, and their bookkeeping.

Text that copies from its context (a quoted passage, a code file being edited, an earlier turn)
repeats token runs the sequence has already seen. When the last few tokens of a sequence occurred
before, the tokens that followed them then are a cheap guess of what comes next. The engine puts
that guess (the draft) into the same decode step as the sequence's next token, asks for logits at
every position, and keeps the longest prefix of the draft that the model itself would have chosen,
plus the model's own token after it. For a greedy request the output is therefore exactly what
decoding one token at a time gives; only the number of decode steps shrinks.

A sampled request keeps a draft token ``d`` with probability ``p(d)``, ``p`` being the request's
own sampling distribution at that position (penalties, grammar, top-k/top-p/min-p and temperature
applied); on rejection its token is drawn from ``p`` without ``d``, renormalised. An n-gram draft
is a fixed proposal (a point mass on ``d``), for which this is the speculative sampling rule of
Leviathan et al. and Chen et al. (2023): ``p(d)`` of the time ``d``, and otherwise a token drawn
from ``max(p - q, 0)``, so every emitted token is distributed exactly as plain sampling draws it.

Everything here is pure Python with no inference library behind it:

- ``NgramIndex``: the most recent continuation of every n-gram (``min_n``..``max_n`` tokens) of a
  growing token list; ``draft`` looks up the longest suffix that occurred before.
- ``DraftLength``: how many draft tokens a sequence gets, from its recent acceptance: more while
  drafts are accepted, fewer after rejections, and none for a while after repeated failures. Where
  a draft token costs decode time (``draft_cost``), only as many as are expected to pay for
  themselves (``best_draft_length``), none while none would.
- ``SpecCounters``: totals in vLLM's terms (drafts, draft tokens, accepted tokens, accepted per position).
- ``sampling_probs`` and ``accept_or_resample``: the speculative sampling rule for one position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pykaito.runtime.engine import SpecDecodeStats

log = logging.getLogger(__name__)

MIN_NGRAM = 2  # the shortest suffix that may propose a draft
MAX_NGRAM = 4  # the longest suffix looked up (the longest match wins)
MAX_DRAFT = 8  # draft tokens per sequence and step, at most
MAX_SPECULATING = 4  # more sequences decoding than this: the step is compute-bound, no drafts
STEP_DRAFT_BUDGET = 16  # draft tokens in one decode step, all sequences together
LOG_INTERVAL_S = 10.0  # how often the acceptance rate is logged while drafts are verified
MIN_SPEEDUP = 1.05  # a draft must be expected to give this many more tokens per second than none
ACCEPTANCE_DECAY = 0.8  # weight of the earlier drafts in a sequence's acceptance estimate, per draft
PROBE_DRAFT = 2  # draft tokens tried after a pause for want of an expected speedup


class NgramIndex:
    """Where each recent n-gram of a token list was last followed by another token."""

    def __init__(self, min_n: int = MIN_NGRAM, max_n: int = MAX_NGRAM) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"n-gram sizes must satisfy 1 <= min_n <= max_n, got {min_n}..{max_n}")
        self.min_n = min_n
        self.max_n = max_n
        self.tokens: list[int] = []
        self._next: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_n + 1)]

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens, recording for each n-gram they complete the position of its follower."""
        history = self.tokens
        for token in tokens:
            i = len(history)  # the index ``token`` takes: the follower of every n-gram ending at i - 1
            for n in range(self.min_n, min(self.max_n, i) + 1):
                self._next[n][tuple(history[i - n : i])] = i
            history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the longest earlier occurrence of the current suffix."""
        history = self.tokens
        if limit <= 0:
            return []
        for n in range(min(self.max_n, len(history)), self.min_n - 1, -1):
            start = self._next[n].get(tuple(history[len(history) - n :]))
            if start is not None:
                return history[start : start + limit]
        return []


def sampling_probs(logits: npt.ArrayLike, *, greedy: bool = False) -> npt.NDArray[np.float64]:
    """The distribution a sampler's final step draws from, given the candidates' transformed logits.

    ``greedy``: all the mass on the first of the largest logits (llama.cpp's greedy sampler);
    otherwise the softmax of the logits (its dist sampler, after temperature and truncation).
    """
    values: npt.NDArray[np.float64] = np.asarray(logits, dtype=np.float64)
    if greedy:
        onehot = np.zeros_like(values)
        onehot[int(values.argmax())] = 1.0
        return onehot
    probs: npt.NDArray[np.float64] = np.exp(values - values.max())
    probs /= probs.sum()
    return probs


def accept_or_resample(
    ids: npt.ArrayLike, probs: npt.ArrayLike, draft: int, rng: np.random.Generator
) -> tuple[int, bool]:
    """The token emitted where a sampled request's draft proposes ``draft``, and whether it was kept.

    ``ids[i]`` has probability ``probs[i]`` under the request's sampling; a token missing from
    ``ids`` has probability 0. ``draft`` stands with probability ``p(draft)``; otherwise the token
    is drawn from ``p`` with ``draft`` removed and renormalised (``max(p - q, 0)`` for the point
    mass ``q`` an n-gram draft is). The emitted token then has exactly the distribution ``p``:
    ``P(t) = p(t) * [t == draft] + (1 - p(draft)) * p(t) / (1 - p(draft)) * [t != draft]``.
    """
    ids_arr = np.asarray(ids)
    p = np.asarray(probs, dtype=np.float64)
    at = np.flatnonzero(ids_arr == draft)
    p_draft = float(p[at].sum()) if at.size else 0.0
    if rng.random() < p_draft:
        return draft, True
    residual = p.copy()
    residual[at] = 0.0
    return int(ids_arr[_draw(residual, rng)]), False


def _draw(weights: npt.NDArray[np.float64], rng: np.random.Generator) -> int:
    """An index drawn with probability proportional to ``weights`` (not all zero)."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    if index >= len(weights):  # rounding put the point on the total: the last token with weight
        index = int(np.flatnonzero(weights)[-1])
    return index


def expected_speedup(acceptance: float, draft: int, draft_cost: float) -> float:
    """Tokens per unit of decode time with ``draft`` draft tokens a step, relative to none.

    Each draft token stands with probability ``acceptance`` once those before it stood, so a step
    yields ``1 + a + a**2 + ... + a**draft`` tokens; it takes ``1 + draft_cost * draft`` times as
    long as a step of one token (``draft_cost``: a draft token's share of a one-token step).
    """
    tokens = sum(acceptance**i for i in range(draft + 1))
    return tokens / (1.0 + draft_cost * draft)


def best_draft_length(acceptance: float, draft_cost: float, limit: int) -> int:
    """The draft length up to ``limit`` expected to decode fastest; 0 unless it beats none by MIN_SPEEDUP."""
    best, best_speedup = 0, MIN_SPEEDUP
    for draft in range(1, limit + 1):
        speedup = expected_speedup(acceptance, draft, draft_cost)
        if speedup > best_speedup:
            best, best_speedup = draft, speedup
    return best


def drafts_can_pay(draft_cost: float, max_draft: int) -> bool:
    """Whether drafts of up to ``max_draft`` tokens can be worth it even if every draft token stands."""
    return draft_cost <= 0 or best_draft_length(1.0, draft_cost, max_draft) > 0


def log_draft_cost(draft_cost: float, timed_tokens: int, max_draft: int) -> str:
    """Log (with the acceptance rate's logger, which ``kaito serve`` shows) what a draft token costs."""
    line = (
        f"speculative decoding: a draft token costs {draft_cost:.2f} of a one-token step "
        f"(timed with {timed_tokens} tokens)"
    )
    if not drafts_can_pay(draft_cost, max_draft):
        line += ": drafts cannot pay off here, none are made"
    log.info("%s", line)
    return line


@dataclass
class DraftLength:
    """A sequence's draft length, adapted to how many of its recent drafts were accepted.

    All accepted: the next draft may be longer (up to ``max_draft``). A rejection: the next draft
    is one longer than what was accepted. Drafts rejected at their first token ``failures`` times
    in a row: no drafts for ``2 ** failures`` steps (at most 64), then one more try.

    With a ``draft_cost`` (a draft token's share of the decode time of a one-token step; 0: drafts
    cost nothing), a draft is also cut to the length expected to decode fastest given the
    sequence's acceptance so far (``best_draft_length``). While no length is worth it the sequence
    drafts nothing for 2, 4, ... 64 steps, then tries a short draft anyway (``PROBE_DRAFT``
    tokens), which updates its acceptance. Where not even drafts that always stand would pay
    (``drafts_can_pay`` is False), it never drafts.
    """

    max_draft: int = MAX_DRAFT
    length: int = 4
    failures: int = 0
    pause: int = 0
    draft_cost: float = 0.0
    kept: float = 4.0  # decayed count of draft tokens that stood (a prior of 4 in 5)
    rejected: float = 1.0  # decayed count of drafts cut short by a rejected token
    idle: int = 0  # pauses in a row for want of an expected speedup
    _probe: bool = False  # the step after a pause drafts whatever it is expected to be worth

    def __post_init__(self) -> None:
        self._never = not drafts_can_pay(self.draft_cost, self.max_draft)

    @property
    def acceptance(self) -> float:
        """The estimated chance that a draft token stands once those before it did."""
        return self.kept / (self.kept + self.rejected)

    def allowed(self) -> int:
        """Draft tokens this step (0 while paused); counts the paused step."""
        if self._never:
            return 0
        if self.pause > 0:
            self.pause -= 1
            self._probe = self.pause == 0
            return 0
        limit = min(self.length, self.max_draft)
        if self.draft_cost > 0 and self._probe:
            limit = min(limit, PROBE_DRAFT)
        elif self.draft_cost > 0:
            limit = best_draft_length(self.acceptance, self.draft_cost, limit)
            if limit == 0:
                self.idle = min(self.idle + 1, 6)
                self.pause = 2**self.idle
                return 0
            self.idle = 0
        self._probe = False
        return limit

    def update(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        self.kept = ACCEPTANCE_DECAY * self.kept + accepted
        self.rejected = ACCEPTANCE_DECAY * self.rejected + (1 if accepted < drafted else 0)
        if accepted >= drafted:
            self.length = min(self.max_draft, max(self.length, drafted) + 2)
            self.failures = 0
            return
        self.length = max(1, accepted + 1)
        if accepted == 0:
            self.failures += 1
            if self.failures >= 2:
                self.pause = min(64, 2**self.failures)
        else:
            self.failures = 0


@dataclass
class SpecCounters:
    """Running totals of speculative decoding, in the terms of vLLM's spec_decode metrics."""

    drafts: int = 0  # verification steps with at least one draft token
    draft_tokens: int = 0
    accepted_tokens: int = 0
    accepted_per_pos: list[int] = field(default_factory=lambda: [0] * MAX_DRAFT)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        with self._lock:
            self.drafts += 1
            self.draft_tokens += drafted
            self.accepted_tokens += accepted
            for pos in range(min(accepted, len(self.accepted_per_pos))):
                self.accepted_per_pos[pos] += 1

    def snapshot(self) -> tuple[int, int, int, tuple[int, ...]]:
        with self._lock:
            return self.drafts, self.draft_tokens, self.accepted_tokens, tuple(self.accepted_per_pos)

    def stats(self) -> SpecDecodeStats:
        return SpecDecodeStats(*self.snapshot())


class AcceptanceLog:
    """Logs the acceptance rate of the drafts verified since the last line, at most every ``interval`` s."""

    def __init__(self, counters: SpecCounters, interval: float = LOG_INTERVAL_S) -> None:
        self.counters = counters
        self.interval = interval
        self._last = counters.stats()
        self._at = time.monotonic()

    def maybe_log(self, now: float | None = None) -> str | None:
        """The line logged now, if the interval has passed and drafts were verified; else None."""
        now = time.monotonic() if now is None else now
        if now - self._at < self.interval:
            return None
        current, last = self.counters.stats(), self._last
        drafts = current.drafts - last.drafts
        tokens = current.draft_tokens - last.draft_tokens
        accepted = current.accepted_tokens - last.accepted_tokens
        per_pos = [c - p for c, p in zip(current.accepted_per_pos, last.accepted_per_pos, strict=True)]
        elapsed, self._at, self._last = now - self._at, now, current
        if drafts <= 0:
            return None
        shown = [f"{n / drafts:.2f}" for n in per_pos]
        while len(shown) > 1 and per_pos[len(shown) - 1] == 0:
            shown.pop()
        line = (
            f"speculative decoding: acceptance rate {100 * accepted / tokens:.1f}% "
            f"({accepted} of {tokens} draft tokens), mean acceptance length {1 + accepted / drafts:.2f}, "
            f"{drafts} drafts in {elapsed:.0f} s, accepted per position: {', '.join(shown)}"
        )
        log.info("%s", line)
        return line
