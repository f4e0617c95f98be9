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

Whether a draft pays depends on the machine: on a CPU a step of two tokens can take nearly twice
as long as a step of one, and a step of 64 tokens twenty times as long. The engine times steps of
1 to 65 tokens when it loads (the ``CostCurve``) and drafts only as many tokens as are expected to
give more tokens per second than none, given how often drafts stand.

Everything here is pure Python with no inference library behind it:

- ``NgramIndex``: the most recent continuation of every n-gram (``min_n``..``max_n`` tokens) of a
  growing token list; ``find`` looks up the longest suffix that occurred before and follows the
  match back to tell its length; ``continuation`` is the draft (a repeating run goes on past the end).
- ``DraftPool``: the indexes of recently finished requests, so a repeated request drafts the
  earlier reply.
- ``MatchAcceptance``: engine-wide, how often draft tokens stood, by the length of the match that
  proposed them (a long match is text being copied; a two-token match is often a guess).
- ``DraftLength``: one sequence's draft length: its own recent acceptance blended with the match
  estimate, the ``CostCurve`` of the step, and a cap that doubles while drafts stand in full
  (``best_draft``).
- ``SpecCounters``: totals in vLLM's terms (drafts, draft tokens, accepted tokens, accepted per position).
- ``sampling_probs`` and ``accept_or_resample``: the speculative sampling rule for one position.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pykaito.runtime.engine import SpecDecodeStats
from pykaito.runtime.scheduler import DraftStep

log = logging.getLogger(__name__)

MIN_NGRAM = 2  # the shortest suffix that may propose a draft
MAX_NGRAM = 4  # the longest suffix looked up (the longest match wins)
MAX_MATCH = 1024  # how far back a match is followed to tell how long it is
OCCURRENCES = 4  # places of each n-gram remembered (the latest), of which the longest match drafts
MAX_DRAFT = 64  # draft tokens per sequence and step, at most
MAX_SPECULATING = 4  # more sequences decoding than this: the step is compute-bound, no drafts
STEP_DRAFT_BUDGET = 64  # draft tokens in one decode step, all sequences together
FIRST_DRAFT_CAP = 8  # a sequence's drafts are at most this long until one stands in full
LOG_INTERVAL_S = 10.0  # how often the acceptance rate is logged while drafts are verified
MIN_SPEEDUP = 1.05  # a draft must be expected to give this many more tokens per second than none
ACCEPTANCE_DECAY = 0.8  # weight of a sequence's earlier drafts in its acceptance estimate, per draft
REST_DECAY = 0.9  # ... and per step without a draft, so the match length decides again after a while
TABLE_DECAY = 0.95  # weight of earlier drafts in the engine-wide estimate for a match length, per draft
PRIOR_WEIGHT = 4.0  # draft tokens' worth of evidence the match length's estimate counts for
POOL_SEQUENCES = 16  # finished sequences whose tokens later requests may draft from
POOL_TOKENS = 1 << 16  # ... holding at most this many tokens together
# match lengths of at least (2, 3, 4, 8, 16, 32, 128) tokens, and what share of draft tokens is expected
# to stand after each before anything was verified: a long match means text being copied
MATCH_BUCKETS = (2, 3, 4, 8, 16, 32, 128)
MATCH_PRIORS = (0.3, 0.5, 0.7, 0.85, 0.92, 0.95, 0.99)
TRUSTED_MATCH = 128  # a match this long (a request repeating an earlier one) drafts past the cap at once


class NgramIndex:
    """Where each recent n-gram of a token list was followed by another token (its latest occurrences)."""

    def __init__(self, min_n: int = MIN_NGRAM, max_n: int = MAX_NGRAM) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"n-gram sizes must satisfy 1 <= min_n <= max_n, got {min_n}..{max_n}")
        self.min_n = min_n
        self.max_n = max_n
        self.tokens: list[int] = []
        self._next: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(max_n + 1)]

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens, recording for each n-gram they complete the position of its follower."""
        history, tables = self.tokens, self._next
        for token in tokens:
            i = len(history)  # the index ``token`` takes: the follower of every n-gram ending at i - 1
            for n in range(self.min_n, min(self.max_n, i) + 1):
                key = tuple(history[i - n : i])
                seen = tables[n].get(key)
                if seen is None:
                    tables[n][key] = [i]
                else:
                    seen.append(i)
                    if len(seen) > OCCURRENCES:
                        del seen[0]
            history.append(token)

    def find(self, suffix: list[int], aligned: bool = False) -> tuple[int, int] | None:
        """Where the longest suffix of ``suffix`` occurred here: (its follower's index, match length).

        The n-gram lookup gives the latest ``OCCURRENCES`` places of the last ``max_n`` (or fewer)
        tokens; each match is followed back, up to ``MAX_MATCH`` tokens, and the longest wins (the
        latest on a tie). A phrase that recurs then continues where the text around it recurs too.
        ``aligned``: also try the place at the same offset, where a sequence that repeats this one
        from its start stands (however often its last tokens recur later on).
        """
        size = len(suffix)
        for n in range(min(self.max_n, size), self.min_n - 1, -1):
            starts = self._next[n].get(tuple(suffix[size - n :]))
            if starts:
                candidates = list(reversed(starts))
                if aligned and size not in starts and self.tokens[size - n : size] == suffix[size - n :]:
                    candidates.append(size)
                best = (0, -1)
                for start in candidates:
                    length = self._match_length(start, suffix, n)
                    if length > best[1]:
                        best = (start, length)
                return best
        return None

    def _match_length(self, start: int, suffix: list[int], known: int) -> int:
        """How many tokens before ``start`` equal the end of ``suffix`` (``known`` do), up to MAX_MATCH."""
        history = self.tokens
        cap = min(MAX_MATCH, start, len(suffix))

        def equal(length: int) -> bool:  # slices compare in C
            return history[start - length : start] == suffix[len(suffix) - length :]

        good, step = known, known
        while good < cap:  # double the length while it still matches, then halve the gap
            probe = min(cap, good + step)
            if not equal(probe):
                break
            good, step = probe, step * 2
        else:
            return good
        bad = min(cap, good + step)
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if equal(mid) else (good, mid)
        return good

    def continuation(self, start: int, limit: int) -> list[int]:
        """Up to ``limit`` tokens from ``start`` on; past the end, the run repeats (a loop continues)."""
        history = self.tokens
        if limit <= 0 or start >= len(history):
            return []
        if start + limit <= len(history):
            return history[start : start + limit]
        period = len(history) - start
        return [history[start + k % period] for k in range(limit)]


class DraftPool:
    """The n-gram indexes of recently finished sequences, newest first, for later requests to draft from.

    A request that repeats an earlier one (a retry, a rerun, the same question asked again) can
    then draft the earlier reply. At most ``max_sequences`` indexes of ``max_tokens`` tokens in
    all are kept; the oldest go first.
    """

    def __init__(self, max_sequences: int = POOL_SEQUENCES, max_tokens: int = POOL_TOKENS) -> None:
        self.max_sequences = max_sequences
        self.max_tokens = max_tokens
        self._indexes: list[NgramIndex] = []
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._indexes)

    def add(self, index: NgramIndex) -> None:
        if self.max_sequences <= 0 or not index.tokens or len(index.tokens) > self.max_tokens:
            return
        self._indexes.insert(0, index)
        self._tokens += len(index.tokens)
        while len(self._indexes) > self.max_sequences or self._tokens > self.max_tokens:
            self._tokens -= len(self._indexes.pop().tokens)

    def find(self, suffix: list[int], longer_than: int = 0) -> tuple[NgramIndex, int, int] | None:
        """The index holding the longest match for ``suffix`` (the newest on a tie), if longer than given."""
        best: tuple[NgramIndex, int, int] | None = None
        for index in self._indexes:
            found = index.find(suffix, aligned=True)
            if found is not None and found[1] > (best[2] if best else longer_than):
                best = (index, *found)
                if found[1] >= MAX_MATCH:
                    break
        return best


class CostCurve:
    """The decode time of a step by its token count, in one-token steps (logits for every token).

    Built from points timed where the model runs and interpolated between them;
    beyond the last point it grows with the last segment's slope. ``linear(c)``: each token after
    the first costs ``c`` of a one-token step (0: any number of tokens decode as fast as one).
    """

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        ordered = sorted((int(n), float(t)) for n, t in points if n >= 1)
        if not ordered or ordered[0][0] != 1:
            raise ValueError("a cost curve needs the time of a one-token step")
        one = ordered[0][1]
        if one <= 0:
            raise ValueError(f"a one-token step must take some time, got {one}")
        self.points = [(n, max(t / one, 1.0)) for n, t in ordered]
        if len(self.points) == 1:
            self.points.append((2, 1.0))

    @classmethod
    def linear(cls, draft_cost: float) -> CostCurve:
        return cls([(1, 1.0), (2, 1.0 + max(0.0, draft_cost))])

    def __call__(self, tokens: int) -> float:
        points = self.points
        for (n0, t0), (n1, t1) in itertools.pairwise(points):
            if tokens <= n1:
                return t0 + (t1 - t0) * (max(tokens, n0) - n0) / (n1 - n0)
        (n0, t0), (n1, t1) = points[-2], points[-1]
        return t1 + (t1 - t0) * (tokens - n1) / (n1 - n0)

    def step(self, sequences: int, drafted: int) -> float:
        """A step with the next token of ``sequences`` sequences and ``drafted`` draft tokens.

        One sequence decodes its token and draft in one batch. With several, llama.cpp splits a
        step whose sequences bring unequal token counts into micro-batches (each sequence's KV
        cache is apart), so the draft tokens cost about a step of their own.
        """
        if sequences <= 1 or drafted <= 0:
            return self(sequences + drafted)
        return self(sequences) + self(drafted)

    def describe(self) -> str:
        return ", ".join(f"{n}: {t:.2f}" for n, t in self.points)


def best_draft(
    acceptance: float,
    available: int,
    curve: CostCurve,
    sequences: int = 1,
    drafted: int = 0,
    expected: float = 1.0,
) -> tuple[int, float]:
    """The draft length (at most ``available``) that makes the step yield the most tokens per time.

    The step already carries the next tokens of ``sequences`` sequences and ``drafted`` draft
    tokens, expected to yield ``expected`` tokens; draft token ``k`` stands with probability
    ``acceptance ** k`` (those before it stood), and the step then takes ``curve.step(...)``.
    Returns the length and the tokens it is expected to add; (0, 0.0) unless it beats no draft by
    ``MIN_SPEEDUP``.
    """
    best, best_gain = 0, 0.0
    best_rate = MIN_SPEEDUP * expected / curve.step(sequences, drafted)
    gain, stands = 0.0, 1.0
    for draft in range(1, available + 1):
        stands *= acceptance
        gain += stands
        rate = (expected + gain) / curve.step(sequences, drafted + draft)
        if rate > best_rate:
            best, best_gain, best_rate = draft, gain, rate
        elif stands < 0.01:
            break
    return best, best_gain


def drafts_can_pay(curve: CostCurve, max_draft: int) -> bool:
    """Whether a draft of at most ``max_draft`` tokens can be worth it, even if every draft token stands."""
    return best_draft(1.0, max_draft, curve)[0] > 0


def log_cost_curve(curve: CostCurve, max_draft: int) -> str:
    """Log (with the acceptance rate's logger, which ``kaito serve`` shows) what a verification step costs."""
    line = f"speculative decoding: a step of n tokens takes (n: one-token steps) {curve.describe()}"
    if not drafts_can_pay(curve, max_draft):
        line += ": drafts cannot pay off here, none are made"
    log.info("%s", line)
    return line


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


class MatchAcceptance:
    """Engine-wide: the share of draft tokens that stood, by the length of the match that proposed them.

    A draft proposed by a long match is usually text being copied and stands; one proposed by a
    two-token match is often a guess. Each bucket starts from its prior (``MATCH_PRIORS``) and
    follows the drafts verified since, the recent ones weighing most.
    """

    def __init__(self) -> None:
        self.kept = [0.0] * len(MATCH_BUCKETS)
        self.cut = [0.0] * len(MATCH_BUCKETS)

    @staticmethod
    def bucket(match: int) -> int:
        """The index of the bucket a match length falls in."""
        return max(0, sum(1 for edge in MATCH_BUCKETS if match >= edge) - 1)

    @classmethod
    def prior(cls, match: int) -> float:
        """The share expected before any draft was verified."""
        return MATCH_PRIORS[cls.bucket(match)]

    def estimate(self, match: int) -> float:
        b = self.bucket(match)
        return (self.kept[b] + MATCH_PRIORS[b] * PRIOR_WEIGHT) / (self.kept[b] + self.cut[b] + PRIOR_WEIGHT)

    def update(self, match: int, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        b = self.bucket(match)
        self.kept[b] = TABLE_DECAY * self.kept[b] + accepted
        self.cut[b] = TABLE_DECAY * self.cut[b] + (1 if accepted < drafted else 0)


@dataclass
class DraftLength:
    """How long one sequence's next draft is: what its acceptance so far makes pay off.

    The acceptance estimate blends the engine-wide figure for the current match length
    (``PRIOR_WEIGHT`` draft tokens' worth) with the sequence's own drafts (decayed counts of draft
    tokens that stood and of drafts cut short), so a sequence that keeps copying drafts more.
    The length is then the one expected to decode fastest on the step's ``CostCurve``
    (``best_draft``), and at most ``cap``: ``FIRST_DRAFT_CAP`` at first, doubling each time a
    draft stands in full, back to twice the accepted run after a rejection. A long draft thus
    follows only a run of drafts that stood. Each step without a draft (``rest``) fades the
    sequence's own record, so a sequence whose early drafts failed drafts again when it starts
    copying (a long match).
    """

    max_draft: int = MAX_DRAFT
    cap: int = FIRST_DRAFT_CAP
    kept: float = 0.0  # decayed count of this sequence's draft tokens that stood
    cut: float = 0.0  # decayed count of its drafts cut short by a rejected token
    match: int = 0  # the match length of the last draft proposed

    def acceptance(self, prior: float) -> float:
        """The chance that a draft token stands once those before it did."""
        return (self.kept + prior * PRIOR_WEIGHT) / (self.kept + self.cut + PRIOR_WEIGHT)

    def choose(
        self, available: int, prior: float, curve: CostCurve, step: DraftStep | None = None, match: int = 0
    ) -> tuple[int, float]:
        """The draft length for this step (at most ``available``) and the tokens it is expected to add.

        ``prior``: the share of draft tokens expected to stand for a match of this length
        (``match``; one of ``TRUSTED_MATCH`` tokens or more is not held to the cap). ``step``: what
        the step holds so far (none: this sequence's next token alone).
        """
        cap = self.max_draft if match >= TRUSTED_MATCH else self.cap
        limit = min(available, cap, self.max_draft)
        if limit <= 0:
            return 0, 0.0
        acceptance = self.acceptance(prior)
        if step is None:
            return best_draft(acceptance, limit, curve)
        return best_draft(acceptance, limit, curve, step.sequences, step.drafted, step.expected)

    def rest(self) -> None:
        """A step without a draft: the sequence's own drafts weigh a little less against the match's."""
        self.kept *= REST_DECAY
        self.cut *= REST_DECAY

    def update(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        self.kept = ACCEPTANCE_DECAY * self.kept + accepted
        self.cut = ACCEPTANCE_DECAY * self.cut + (1 if accepted < drafted else 0)
        if accepted >= drafted:
            self.cap = min(self.max_draft, max(self.cap, 2 * drafted))
        else:
            self.cap = min(self.max_draft, max(FIRST_DRAFT_CAP, 2 * accepted))


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
