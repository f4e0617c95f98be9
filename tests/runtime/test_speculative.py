"""N-gram speculative decoding: the pure pieces, the scheduler's drafts, and the real engine.

The engine tests compare a request decoded with drafts against the same request without them
(``SamplingParams.speculative=False``) on the same engine, so both runs share threads and
numerics: greedy output must be identical token for token, and drafts must really have been
accepted (the engine's counters move), so the comparison cannot pass by never speculating.

A prompt prefilled in one chunk and one found in the prefix cache may differ in the last bits
of their logits (llama.cpp computes attention differently for long batches), so every prompt
is cached once (``warm``) before the compared runs: both then start from the same cached prefix.
For the same reason concurrent requests are compared with the same requests run concurrently
without drafts: sequences decoded together may round differently from one decoded alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from pykaito.catalog.embedded import embedded_gguf_path
from pykaito.cli.main import app as cli_app
from pykaito.runtime.engine import (
    ChatMessage,
    Delta,
    EngineStats,
    GenerationRequest,
    SamplingParams,
    SpecDecodeStats,
)
from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings
from pykaito.runtime.engines.llamacpp_native import Candidates, build_sampler
from pykaito.runtime.metrics import ServerMetrics
from pykaito.runtime.scheduler import DraftStep, Scheduler, SequenceState
from pykaito.runtime.speculative import (
    FIRST_DRAFT_CAP,
    MAX_MATCH,
    TRUSTED_MATCH,
    AcceptanceLog,
    CostCurve,
    DraftLength,
    DraftPool,
    MatchAcceptance,
    NgramIndex,
    SpecCounters,
    accept_or_resample,
    best_draft,
    drafts_can_pay,
    log_cost_curve,
    sampling_probs,
)
from tests.runtime.engine_fixture import engine

__all__ = ["engine"]

PASSAGE = (
    "The lighthouse stood on the northern cliff for two hundred years. Every night its keeper climbed "
    "the spiral stairs, trimmed the wick, and watched the beam sweep across the black water. Ships passed "
    "safely because of that light, and the villagers said the keeper never once let it go dark."
)
CODE = """def total(items):
    result = 0
    for item in items:
        result += item.price * item.quantity
    return result
"""
PROMPTS = {
    "copy": f"Copy this passage exactly:\n\n{PASSAGE}",
    "quote": f"Here is a document:\n\n{PASSAGE}\n\nQuote the sentence about the ships.",
    "code": f"Rename the function total to order_total in this code and show the whole code:\n\n{CODE}",
    "fresh": "Write a short poem about autumn rain.",
}


# -- the pure pieces ---------------------------------------------------------------------------


def draft(index: NgramIndex, limit: int) -> list[int]:
    """What the engine drafts from a sequence's own tokens: the continuation of its longest match."""
    found = index.find(index.tokens)
    return index.continuation(found[0], limit) if found else []


def test_the_longest_earlier_suffix_proposes_what_followed_it() -> None:
    index = NgramIndex(min_n=2, max_n=3)
    index.extend([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3])
    # suffix (1, 2, 3) occurred at the start, followed by 4 5; (2, 3) alone last led to 7
    assert draft(index, 2) == [4, 5]
    assert draft(index, 10) == [4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    assert draft(index, 0) == []


def test_the_most_recent_occurrence_wins_and_short_suffixes_do_not_draft() -> None:
    index = NgramIndex(min_n=2, max_n=2)
    index.extend([5, 6, 1, 5, 6, 2, 5, 6])
    assert draft(index, 1) == [2]
    index.extend([3])
    assert draft(index, 4) == []  # (6, 3) never occurred before; a single token is below min_n
    with pytest.raises(ValueError, match="min_n"):
        NgramIndex(min_n=3, max_n=2)


def test_a_match_is_followed_back_to_tell_its_length_and_a_loop_continues_past_the_end() -> None:
    index = NgramIndex(min_n=2, max_n=3)
    index.extend([9, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3])
    # the suffix 8 1 2 3 occurred before (9 8 1 2 3 does not): four tokens, though the lookup takes three
    assert index.find(index.tokens) == (5, 4)
    assert index.find([5, 5]) is None
    loop = NgramIndex(min_n=2, max_n=2)
    loop.extend([1, 7, 8, 9, 7, 8, 9, 7, 8])
    start, length = loop.find(loop.tokens) or (0, 0)
    assert (start, length) == (6, 5)  # 7 8 9 7 8 9 7 8 is a run of period 3
    assert loop.continuation(start, 7) == [9, 7, 8, 9, 7, 8, 9]  # the run goes on past the end
    assert loop.continuation(start, 0) == [] and loop.continuation(99, 3) == []
    long = NgramIndex()
    long.extend(list(range(MAX_MATCH + 50)) * 2)
    assert long.find(long.tokens) == (MAX_MATCH + 50, MAX_MATCH)  # followed back at most MAX_MATCH tokens
    assert long.find([*range(20, 30), 30, 31]) == (MAX_MATCH + 50 + 32, 12)  # the latest occurrence


def test_the_pool_drafts_an_earlier_reply_and_keeps_only_the_newest() -> None:
    pool = DraftPool(max_sequences=2, max_tokens=100)
    earlier = NgramIndex()
    earlier.extend([1, 2, 3, 4, 5, 6, 7, 8])
    pool.add(earlier)
    found = pool.find([0, 2, 3, 4])
    assert found is not None and found[0] is earlier and found[1:] == (4, 3)
    assert found[0].continuation(found[1], 3) == [5, 6, 7]
    assert pool.find([0, 2, 3, 4], longer_than=3) is None  # the sequence's own match is as long
    for tokens in ([40, 41, 42], [50, 51, 52]):
        other = NgramIndex()
        other.extend(tokens)
        pool.add(other)
    assert len(pool) == 2 and pool.find([2, 3, 4]) is None  # the oldest went first
    big = NgramIndex()
    big.extend(range(101))
    pool.add(big)  # larger than the whole pool: not kept
    assert pool.find([10, 11]) is None
    off = DraftPool(max_sequences=0)
    off.add(earlier)
    assert len(off) == 0


def test_a_cost_curve_interpolates_its_timed_points_and_extends_the_last_slope() -> None:
    curve = CostCurve([(1, 0.008), (2, 0.014), (4, 0.02), (8, 0.028)])
    assert curve(1) == 1.0 and curve(2) == pytest.approx(1.75)
    assert curve(3) == pytest.approx(2.125)  # halfway between 2 and 4 tokens
    assert curve(12) == pytest.approx(3.5 + 4 * 0.25)  # past the last point: its segment's slope
    assert CostCurve.linear(0.0)(50) == 1.0 and CostCurve.linear(0.5)(5) == 3.0
    with pytest.raises(ValueError, match="one-token step"):
        CostCurve([(2, 0.01)])


def test_drafts_are_as_long_as_pays_off_on_the_cost_curve() -> None:
    free = CostCurve.linear(0.0)
    assert best_draft(0.5, 8, free)[0] == 8  # free draft tokens: as long as allowed
    steep = CostCurve([(1, 1.0), (2, 1.8), (4, 2.4), (8, 3.5), (16, 6.5), (32, 12.4), (64, 24.0)])
    assert best_draft(0.3, 64, steep) == (0, 0.0)  # a guess that rarely stands costs more than it saves
    assert best_draft(0.6, 64, steep)[0] == 0  # 60 % does not pay for what the first draft tokens cost
    length, gain = best_draft(0.99, 64, steep)
    assert length >= 12 and gain == pytest.approx(sum(0.99**k for k in range(1, length + 1)))
    assert 4 <= best_draft(0.95, 64, steep)[0] < length  # fewer tokens expected to stand: shorter
    # a step that already carries 8 decoding sequences: a draft must beat their rate, not one token's,
    # and costs about a step of its own (llama.cpp splits unequal sequences into micro-batches)
    assert steep.step(8, 16) == steep(8) + steep(16) and steep.step(1, 16) == steep(17)
    assert best_draft(0.95, 64, steep, sequences=8, expected=8.0)[0] == 0
    assert best_draft(0.95, 64, steep, sequences=2, expected=2.0)[0] > 0  # two: still worth it
    assert drafts_can_pay(steep, 64) and not drafts_can_pay(CostCurve.linear(1.0), 64)
    assert log_cost_curve(CostCurve.linear(1.0), 8).endswith("drafts cannot pay off here, none are made")
    assert "2: 1.80, 4: 2.40" in log_cost_curve(steep, 64)


def test_draft_length_blends_the_match_estimate_with_the_sequences_own_drafts() -> None:
    length = DraftLength(max_draft=64)
    free = CostCurve.linear(0.0)
    assert length.choose(64, 0.9, free) == (FIRST_DRAFT_CAP, pytest.approx(sum(0.9**k for k in range(1, 9))))
    length.update(8, 8)
    assert length.cap == 16 and length.acceptance(0.5) == pytest.approx((8 + 2) / (8 + 4))
    length.update(16, 16)
    length.update(32, 32)
    assert length.cap == 64 and length.choose(100, 0.5, free)[0] == 64
    length.update(64, 3)  # cut short: back to twice the accepted run, at least the first cap
    assert length.cap == FIRST_DRAFT_CAP
    length.update(8, 6)
    assert length.cap == 12
    assert length.choose(0, 0.9, free) == (0, 0.0)
    # a request repeating an earlier one (a match of TRUSTED_MATCH tokens) is not held to the cap
    assert DraftLength().choose(64, 0.99, free, match=TRUSTED_MATCH)[0] == 64
    assert DraftLength().choose(64, 0.99, free, match=TRUSTED_MATCH - 1)[0] == FIRST_DRAFT_CAP
    shared = DraftStep(sequences=2, drafted=0, expected=2.0, left=64)  # another sequence decodes too
    assert DraftLength().choose(64, 0.5, CostCurve.linear(0.3), shared) == (0, 0.0)
    assert DraftLength().choose(64, 0.5, CostCurve.linear(0.3))[0] > 0  # alone it would pay
    steep = CostCurve([(1, 1.0), (2, 1.8), (4, 2.4), (8, 3.5), (16, 6.5), (32, 12.4), (64, 24.0)])
    failing = DraftLength()
    for _ in range(5):
        failing.update(4, 0)
    assert failing.choose(64, 0.95, steep)[0] == 0  # its drafts keep failing: none, whatever the match
    for _ in range(30):
        failing.rest()  # steps without drafts fade that record
    assert failing.choose(64, 0.95, steep)[0] > 0  # a long match drafts again
    assert failing.choose(64, 0.3, steep)[0] == 0  # a short one still does not


def test_the_match_estimate_starts_from_its_prior_and_follows_the_drafts() -> None:
    table = MatchAcceptance()
    assert table.estimate(2) < table.estimate(4) < table.estimate(16) < table.estimate(MAX_MATCH)
    assert table.bucket(1) == table.bucket(2) == 0 and table.bucket(7) == table.bucket(4)
    before = table.estimate(2)
    for _ in range(20):
        table.update(2, 8, 8)
    assert table.estimate(2) > 0.95 > before and table.estimate(3) == MatchAcceptance().estimate(3)
    for _ in range(100):
        table.update(2, 8, 0)  # then drafts that all fail at their first token
    assert table.estimate(2) < 0.1


def test_counters_follow_vllms_terms() -> None:
    counters = SpecCounters()
    counters.record(4, 2)
    counters.record(3, 3)
    counters.record(0, 0)  # no draft: not a verification
    drafts, draft_tokens, accepted, per_pos = counters.snapshot()
    assert (drafts, draft_tokens, accepted) == (2, 7, 5)
    assert per_pos[:4] == (2, 2, 1, 0)


# The sampling rule on a tiny vocabulary. 20000 draws from a fixed seed: the test is deterministic.
# With 5 tokens the chi-square statistic of a correct rule stays below 18.47 (df 4, p = 0.001) and
# the total variation distance below 0.015 (its expected value is about 0.005 at this N); a rule that
# resamples from the whole distribution instead of the residual is off by 0.1 or more.
TINY_IDS = np.array([4, 0, 9, 2, 7])
TINY_P = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
DRAWS = 20_000
CHI2_DF4_P001 = 18.47
MAX_TV = 0.015


def emitted_frequencies(draft: int, rule: Callable[..., tuple[int, bool]], seed: int) -> tuple[Any, float]:
    """The share of each of TINY_IDS among DRAWS tokens the rule emits, and the share of drafts kept."""
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(TINY_IDS.tolist(), 0)
    kept = 0
    for _ in range(DRAWS):
        token, accepted = rule(TINY_IDS, TINY_P, draft, rng)
        assert accepted == (token == draft)
        counts[token] += 1
        kept += accepted
    return np.array([counts[t] for t in TINY_IDS.tolist()]) / DRAWS, kept / DRAWS


def chi_square(freq: Any) -> float:
    return float((DRAWS * (freq - TINY_P) ** 2 / TINY_P).sum())


@pytest.mark.parametrize(
    ("draft", "p_draft"),
    [
        pytest.param(4, 0.45, id="likely-draft"),
        pytest.param(2, 0.10, id="unlikely-draft"),
        pytest.param(7, 0.05, id="rare-draft"),
        pytest.param(5, 0.0, id="draft-outside-the-candidates"),
    ],
)
def test_the_sampling_rule_emits_exactly_the_target_distribution(draft: int, p_draft: float) -> None:
    freq, kept = emitted_frequencies(draft, accept_or_resample, seed=draft)
    assert chi_square(freq) < CHI2_DF4_P001, freq
    assert 0.5 * np.abs(freq - TINY_P).sum() < MAX_TV, freq
    assert abs(kept - p_draft) < MAX_TV  # the draft is kept p(draft) of the time


def test_the_statistical_check_catches_a_rule_that_resamples_from_the_whole_distribution() -> None:
    def wrong(ids: Any, probs: Any, draft: int, rng: np.random.Generator) -> tuple[int, bool]:
        if rng.random() < float(probs[ids == draft].sum()):
            return draft, True
        token = int(rng.choice(ids, p=probs))  # not the residual: the draft comes out too often
        return token, token == draft

    freq, _ = emitted_frequencies(4, wrong, seed=4)
    assert chi_square(freq) > CHI2_DF4_P001
    assert 0.5 * np.abs(freq - TINY_P).sum() > 0.1


def test_a_greedy_distribution_keeps_only_its_argmax() -> None:
    probs = sampling_probs([1.0, 3.0, 3.0, -2.0], greedy=True)
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0]  # the first of equal maxima, as llama.cpp picks
    rng = np.random.default_rng(0)
    ids = np.array([10, 11, 12, 13])
    assert all(accept_or_resample(ids, probs, 11, rng) == (11, True) for _ in range(100))
    assert all(accept_or_resample(ids, probs, 12, rng) == (11, False) for _ in range(100))
    soft = sampling_probs([0.0, np.log(3.0)])
    assert soft.tolist() == pytest.approx([0.25, 0.75])


def _decoding(scheduler: Scheduler[None], n: int) -> list[SequenceState[None]]:
    seqs = [SequenceState(f"r{i}", [1, 2, 3], None) for i in range(n)]
    for seq in seqs:
        scheduler.submit(seq)
    scheduler.admit(lambda s: None)
    for seq in seqs:
        seq.n_past = 3
        seq.feed(7)
    return seqs


def test_plan_appends_drafts_within_the_step_budget() -> None:
    scheduler: Scheduler[None] = Scheduler(max_running=4, max_waiting=4, prompt_chunk=64, batch_size=64)
    _decoding(scheduler, 3)
    entries = scheduler.plan(lambda seq, step: [9] * min(step.left, 4), max_speculating=4, draft_budget=6)
    assert [(list(e.tokens), e.drafted, e.start_pos) for e in entries] == [
        ([7, 9, 9, 9, 9], 4, 3),
        ([7, 9, 9], 2, 3),
        ([7], 0, 3),
    ]
    plain = scheduler.plan()
    assert [e.drafted for e in plain] == [0, 0, 0]
    seen: list[tuple[int, float, int]] = []

    def propose(seq: SequenceState[None], step: DraftStep) -> list[int]:
        seen.append((step.sequences + step.drafted, step.expected, step.left))
        step.expected += 1.5  # what the proposer expects its two draft tokens to add
        return [9, 9]

    scheduler.plan(propose, max_speculating=4, draft_budget=6)
    assert seen == [(3, 3.0, 6), (5, 4.5, 4), (7, 6.0, 2)]  # each sees the drafts planned before it


def test_plan_drafts_nothing_when_many_sequences_decode() -> None:
    scheduler: Scheduler[None] = Scheduler(max_running=8, max_waiting=4, prompt_chunk=64, batch_size=64)
    _decoding(scheduler, 5)
    asked: list[int] = []

    def propose(seq: SequenceState[None], step: DraftStep) -> list[int]:
        asked.append(step.left)
        return [9]

    entries = scheduler.plan(propose, max_speculating=4, draft_budget=16)
    assert asked == [] and all(e.drafted == 0 for e in entries)


def test_prompt_chunks_leave_room_for_drafts() -> None:
    scheduler: Scheduler[None] = Scheduler(max_running=2, max_waiting=4, prompt_chunk=64, batch_size=12)
    _decoding(scheduler, 1)
    long_prompt = SequenceState("long", list(range(100)), None)
    scheduler.submit(long_prompt)
    scheduler.admit(lambda s: None)
    entries = scheduler.plan(lambda seq, step: [9] * step.left, max_speculating=4, draft_budget=8)
    assert sum(len(e.tokens) for e in entries) <= 12
    assert entries[0].drafted == 8 and len(entries[1].tokens) == 12 - 9


# -- the real engine ---------------------------------------------------------------------------


def chat(eng: LlamaCppEngine, text: str) -> list[int]:
    return eng.tokenize(eng.render_chat([ChatMessage("user", text)]))


def greedy(max_tokens: int = 48, **change: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **change)


async def run(eng: LlamaCppEngine, prompt: list[int], params: SamplingParams, rid: str = "r") -> list[Delta]:
    return [d async for d in eng.generate(GenerationRequest(rid, prompt, params))]


async def warm(eng: LlamaCppEngine, *prompts: list[int]) -> None:
    """Put each prompt in the prefix cache, so the compared runs start from the same cached state."""
    for i, prompt in enumerate(prompts):
        await run(eng, prompt, greedy(1, speculative=False), f"warm{i}")


def ids(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def accepted(eng: LlamaCppEngine) -> int:
    return eng.spec.snapshot()[2]


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def cached_slots(eng: LlamaCppEngine) -> list[int]:
    return [s for s in range(eng.settings.max_running) if eng._scheduler.cached_tokens(s)]


def kv_matches_bookkeeping(eng: LlamaCppEngine, slot: int) -> bool:
    """The slot's KV cache holds exactly the tokens the scheduler says it caches, nothing after them."""
    cached = eng._scheduler.cached_tokens(slot)
    return bool(eng._lib.llama_memory_seq_pos_max(eng._memory, slot) + 1 == len(cached))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROMPTS))
async def test_greedy_output_is_identical_with_and_without_drafts(engine: LlamaCppEngine, name: str) -> None:
    prompt = chat(engine, PROMPTS[name])
    await warm(engine, prompt)
    plain = await run(engine, prompt, greedy(speculative=False))
    before = accepted(engine)
    spec = await run(engine, prompt, greedy())
    assert ids(spec) == ids(plain)
    assert text(spec) == text(plain)
    assert spec[-1].finish_reason == plain[-1].finish_reason
    if name != "fresh":
        assert accepted(engine) > before, "no draft was accepted: the comparison proved nothing"
        assert len(spec) < len(plain), "accepted drafts come several tokens to a chunk"


@pytest.mark.slow
async def test_concurrent_sequences_speculate_in_one_batch_with_identical_output(
    engine: LlamaCppEngine,
) -> None:
    prompts = [chat(engine, PROMPTS[name]) for name in ("copy", "quote", "code")]
    await warm(engine, *prompts)
    plain = await asyncio.gather(
        *(run(engine, p, greedy(speculative=False), f"p{i}") for i, p in enumerate(prompts))
    )
    before = accepted(engine)
    drafts_per_shared_step: list[int] = []  # steps where several sequences decode: how many drafted
    real_step = engine._step

    def step(entries: list[Any]) -> None:
        decoding = [e for e in entries if e.wants_logits and e.start_pos >= len(e.seq.prompt)]
        if len(decoding) > 1:
            drafts_per_shared_step.append(sum(1 for e in decoding if e.drafted))
        real_step(entries)

    engine._step = step  # type: ignore[method-assign]
    try:
        spec = await asyncio.gather(*(run(engine, p, greedy(), f"s{i}") for i, p in enumerate(prompts)))
    finally:
        del engine._step
    assert [ids(d) for d in spec] == [ids(d) for d in plain]
    assert accepted(engine) > before
    # llama.cpp splits a step whose sequences bring unequal token counts into micro-batches: one
    # draft in a step that several sequences share, never more
    assert max(drafts_per_shared_step) == 1


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [1, 2, 7, 20])
async def test_max_tokens_is_exact(engine: LlamaCppEngine, max_tokens: int) -> None:
    prompt = chat(engine, PROMPTS["copy"])
    await warm(engine, prompt)
    plain = await run(engine, prompt, greedy(max_tokens, speculative=False))
    spec = await run(engine, prompt, greedy(max_tokens))
    assert len(ids(spec)) == max_tokens == sum(len(d.token_ids) for d in plain)
    assert ids(spec) == ids(plain)
    assert spec[-1].finish_reason == "length"


@pytest.mark.slow
async def test_a_stop_string_inside_an_accepted_run_cuts_at_its_token(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, PROMPTS["copy"])
    await warm(engine, prompt)
    full = text(await run(engine, prompt, greedy(speculative=False)))
    assert "spiral" in full, full  # the copy reaches the second sentence
    params = greedy(stop=("spiral",))
    plain = await run(engine, prompt, dataclasses.replace(params, speculative=False))
    before = accepted(engine)
    spec = await run(engine, prompt, params)
    assert accepted(engine) > before
    assert text(spec) == text(plain) == full[: full.index("spiral")]
    assert ids(spec) == ids(plain)
    assert spec[-1].finish_reason == "stop"


@pytest.mark.slow
async def test_logprobs_are_those_of_plain_decoding(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, PROMPTS["quote"])
    await warm(engine, prompt)
    plain = await run(engine, prompt, greedy(24, logprobs=2, speculative=False))
    spec = await run(engine, prompt, greedy(24, logprobs=2))
    assert [lp for d in spec for lp in d.logprobs] == [lp for d in plain for lp in d.logprobs]
    assert len([lp for d in spec for lp in d.logprobs]) == len(ids(spec)) == 24


@pytest.mark.slow
async def test_rejected_drafts_leave_the_kv_cache_as_if_never_decoded(engine: LlamaCppEngine) -> None:
    """A finished speculative request's slot holds only its real tokens, and a later prefix hit is exact.

    The same requests run twice on the same engine and slot, first with drafts, then without;
    the follow-up request reuses what the first left in the KV cache.
    """
    prompt = chat(engine, "Tag 5521. " + PROMPTS["code"])  # a prompt no other test caches
    outputs: list[list[int]] = []
    for speculative in (True, False):
        await warm(engine, prompt)
        rejected_before = engine.spec.snapshot()[1] - engine.spec.snapshot()[2]
        first = await run(engine, prompt, greedy(40, speculative=speculative))
        if speculative:
            assert engine.spec.snapshot()[1] - engine.spec.snapshot()[2] > rejected_before, "nothing rejected"
        await wait_until(lambda: bool(cached_slots(engine)) and engine.stats().running == 0)
        assert all(kv_matches_bookkeeping(engine, s) for s in cached_slots(engine))
        follow = [*prompt, *ids(first), *engine.tokenize(" Now explain it.", add_special=False)]
        hit = await run(engine, follow, greedy(24, speculative=False))
        assert hit[0].cached_tokens >= len(prompt) + len(ids(first)) - 1
        outputs.append([*ids(first), -1, *ids(hit)])
    assert outputs[0] == outputs[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "params",
    [
        pytest.param(greedy(200), id="greedy"),
        pytest.param(SamplingParams(max_tokens=200, temperature=0.3, seed=3), id="sampled"),
    ],
)
async def test_cancelling_during_verification_frees_the_slot(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch, params: SamplingParams
) -> None:
    """The client leaves between the decode step and the check of its draft: the slot is freed and clean."""
    prompt = chat(engine, PROMPTS["copy"])
    verify = engine._verify
    hit: list[str] = []

    def cancel_then_verify(entry: Any, *args: Any) -> None:
        if entry.seq.request_id == "leaving" and not hit:
            hit.append(entry.seq.request_id)
            engine._scheduler.cancel(entry.seq)
        verify(entry, *args)

    monkeypatch.setattr(engine, "_verify", cancel_then_verify)
    stream = engine.generate(GenerationRequest("leaving", prompt, params))
    first = await anext(aiter(stream))
    assert first.finish_reason is None
    await wait_until(lambda: bool(hit))
    await wait_until(lambda: engine.stats().running == 0)
    await stream.aclose()  # type: ignore[attr-defined]
    monkeypatch.undo()
    after = await run(engine, prompt, greedy(12, speculative=False))
    assert len(ids(after)) == 12
    assert all(kv_matches_bookkeeping(engine, s) for s in cached_slots(engine))


@pytest.mark.slow
async def test_opted_out_requests_do_not_speculate(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, PROMPTS["copy"])
    before = engine.spec.snapshot()[0]
    await run(engine, prompt, sampled(24, speculative=False))
    await run(engine, prompt, greedy(24, repetition_penalty=1.1, speculative=False))
    await run(engine, prompt, greedy(24, speculative=False))
    assert engine.spec.snapshot()[0] == before


@pytest.mark.slow
async def test_a_repeated_request_drafts_the_earlier_reply_from_the_pool(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Name three colours of the rainbow, then three fruits. [pool]")
    await warm(engine, prompt)
    first = await run(engine, prompt, greedy(32))
    drafts, _, kept, _ = engine.spec.snapshot()
    again = await run(engine, prompt, greedy(32))
    assert ids(again) == ids(first)
    drafts_after, _, kept_after, _ = engine.spec.snapshot()
    # the earlier reply is the draft and stands in full: each token but the first (from the prompt's
    # step) and one per verification step (the model's own, after the draft) comes from it
    steps = drafts_after - drafts
    assert 1 <= steps <= 4 and kept_after - kept == len(ids(first)) - 1 - steps
    no_pool = LlamaCppEngine(dataclasses.replace(engine.settings, prefix_cache=False))
    assert no_pool._pool.max_sequences == 0  # no prefix cache: no drafting from other requests either


def sampled(max_tokens: int = 48, **change: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.7, top_p=0.95, top_k=40, **change)


def test_candidates_are_the_chain_transformed_but_not_yet_picked(engine: LlamaCppEngine) -> None:
    lib, n_vocab = engine._lib, engine.vocab_size
    logits = np.random.default_rng(1).normal(size=n_vocab).astype(np.float32)
    pointer = logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    candidates = Candidates(lib, n_vocab)
    chain = build_sampler(lib, engine._vocab, n_vocab, SamplingParams(temperature=0.5, top_k=5, seed=1))
    try:
        ids, transformed = candidates.transform(chain, pointer)
        assert sorted(ids.tolist()) == sorted(np.argsort(-logits)[:5].tolist())
        assert transformed == pytest.approx(logits[ids] / 0.5)  # top-k, then temperature; no draw
        ids_again, _ = candidates.transform(chain, pointer)
        assert ids_again.tolist() == ids.tolist()
    finally:
        lib.llama_sampler_free(chain)


@pytest.mark.slow
async def test_sampled_requests_speculate_and_respect_max_tokens(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, PROMPTS["copy"])
    await warm(engine, prompt)
    drafts, _, accepted_before, _ = engine.spec.snapshot()
    for max_tokens, seed in ((1, 1), (7, 2), (40, 3), (40, 4)):
        deltas = await run(engine, prompt, sampled(max_tokens, seed=seed, logprobs=1))
        assert len(ids(deltas)) == max_tokens or deltas[-1].finish_reason == "stop"
        assert len(ids(deltas)) <= max_tokens
        assert len([lp for d in deltas for lp in d.logprobs]) == len(ids(deltas))
    after = engine.spec.snapshot()
    assert after[0] > drafts and after[2] > accepted_before, "sampled requests did not speculate"


@pytest.mark.slow
async def test_rejected_sampled_drafts_leave_the_kv_cache_holding_only_the_reply(
    engine: LlamaCppEngine,
) -> None:
    prompt = chat(engine, "Tag 7301. " + PROMPTS["quote"])  # a prompt no other test caches
    before = engine.spec.snapshot()
    first = await run(engine, prompt, sampled(48, seed=21))
    after = engine.spec.snapshot()
    assert after[1] - after[2] > before[1] - before[2], "no sampled draft token was rejected"
    await wait_until(lambda: bool(cached_slots(engine)) and engine.stats().running == 0)
    assert all(kv_matches_bookkeeping(engine, s) for s in cached_slots(engine))
    follow = [*prompt, *ids(first), *engine.tokenize(" Thanks.", add_special=False)]
    hit = await run(engine, follow, greedy(8, speculative=False))
    assert hit[0].cached_tokens >= len(prompt) + len(ids(first)) - 1


@pytest.mark.slow
async def test_a_seeded_sampled_request_repeats_and_a_stop_string_cuts_where_it_would(
    engine: LlamaCppEngine,
) -> None:
    """The same seed gives the same reply; a stop string ends it where the reply without it has it.

    The stop string only hides text: the tokens drawn before it, drafts and their checks
    included, are the ones the request without it draws from the same seed.
    """
    prompt = chat(engine, PROMPTS["copy"])
    await warm(engine, prompt)
    params = SamplingParams(max_tokens=60, temperature=0.3, seed=11)
    before = accepted(engine)
    first = await run(engine, prompt, params)
    second = await run(engine, prompt, params)
    assert ids(first) == ids(second)
    assert accepted(engine) > before
    full = text(first)
    assert "spiral" in full, full
    cut = await run(engine, prompt, dataclasses.replace(params, stop=("spiral",)))
    assert text(cut) == full[: full.index("spiral")]
    assert cut[-1].finish_reason == "stop"


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"repetition_penalty": 1.1}, id="penalties"),
        pytest.param({"grammar": r"root ::= [A-Za-z .,]+"}, id="grammar"),
    ],
)
async def test_greedy_requests_with_a_sampler_chain_are_identical_with_and_without_drafts(
    engine: LlamaCppEngine, change: dict[str, Any]
) -> None:
    """Penalties and grammars go through the sampler chain, one draft token at a time, as plain decoding."""
    prompt = chat(engine, PROMPTS["copy"])
    await warm(engine, prompt)
    plain = await run(engine, prompt, greedy(40, speculative=False, **change))
    before = accepted(engine)
    spec = await run(engine, prompt, greedy(40, **change))
    assert ids(spec) == ids(plain)
    assert accepted(engine) > before


@pytest.mark.slow
async def test_the_cost_curve_is_timed_on_the_decode_thread_and_leaves_the_cache_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every decode runs on the decode thread: a decode on another thread (the loading one, say)
    leaves llama.cpp's CPU worker team of that thread behind, which slowed every later step 1.5-2.5x."""
    import llama_cpp

    threads: set[str] = set()
    real_decode = llama_cpp.llama_decode

    def decode(ctx: Any, batch: Any) -> int:
        threads.add(__import__("threading").current_thread().name)
        return int(real_decode(ctx, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    eng = LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(), n_ctx=2 * 256, max_running=2, threads=1, speculative="ngram"
        )
    )
    await eng.start()
    try:
        points = eng.cost_curve.points
        assert [n for n, _ in points] == [1, 2, 4, 8, 16, 32, 64, 65]
        assert points[-1][1] > points[0][1] == 1.0  # 65 tokens take longer than one
        prompt = chat(eng, PROMPTS["copy"])
        spec = await run(eng, prompt, greedy(12))
        plain = await run(eng, prompt, greedy(12, speculative=False))
        assert ids(spec) == ids(plain) and len(ids(spec)) == 12
        await wait_until(lambda: bool(cached_slots(eng)) and eng.stats().running == 0)
        assert kv_matches_bookkeeping(eng, 0) and kv_matches_bookkeeping(eng, 1)
    finally:
        await eng.stop()
    assert threads == {"llamacpp-decode"}
    off = LlamaCppEngine(
        LlamaCppSettings(model_path=embedded_gguf_path(), n_ctx=256, max_running=1, speculative="off")
    )
    assert off.cost_curve(64) == 1.0  # nothing is timed for an engine that does not speculate


def test_every_position_a_draft_can_reach_has_an_acceptance_counter() -> None:
    settings = LlamaCppSettings(model_path=__import__("pathlib").Path("x.gguf"), speculative="ngram")
    for max_draft, positions in ((12, 12), (3, 3), (100, 64)):  # a step carries 64 draft tokens at most
        eng = LlamaCppEngine(dataclasses.replace(settings, max_draft=max_draft))
        assert len(eng.spec.snapshot()[3]) == positions


def test_an_unknown_speculative_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="speculative must be one of off, ngram"):
        LlamaCppEngine(LlamaCppSettings(model_path=__import__("pathlib").Path("x.gguf"), speculative="eagle"))


# -- metrics, the acceptance log, the flags and the request field --------------------------------


def test_the_acceptance_log_reports_each_interval_once() -> None:
    counters = SpecCounters()
    log = AcceptanceLog(counters, interval=10.0)
    start = time.monotonic()
    counters.record(4, 3)
    counters.record(4, 1)
    assert log.maybe_log(start + 5) is None  # the interval has not passed
    line = log.maybe_log(start + 11)
    assert line is not None
    assert "acceptance rate 50.0% (4 of 8 draft tokens)" in line
    assert "mean acceptance length 3.00" in line and "2 drafts in 11 s" in line
    assert "accepted per position: 1.00, 0.50, 0.50" in line
    assert log.maybe_log(start + 25) is None  # nothing verified since the last line


def test_spec_decode_counters_are_on_metrics_under_vllms_names() -> None:
    spec = SpecDecodeStats(drafts=3, draft_tokens=10, accepted_tokens=6, accepted_per_pos=(3, 2, 1, 0))
    page = ServerMetrics("m", lambda: EngineStats(1, 0, 8, 64, 0.1, spec)).render().decode()
    assert 'vllm:spec_decode_num_drafts_total{model_name="m"} 3.0' in page
    assert 'vllm:spec_decode_num_draft_tokens_total{model_name="m"} 10.0' in page
    assert 'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 6.0' in page
    assert 'vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="1"} 2.0' in page
    plain = ServerMetrics("m", lambda: EngineStats(1, 0, 8, 64)).render().decode()
    assert "spec_decode" not in plain


@pytest.fixture
def spec_log() -> Iterator[logging.Logger]:
    """The acceptance-rate logger at its default level, restored afterwards."""
    logger = logging.getLogger("pykaito.runtime.speculative")
    previous = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(previous)


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        pytest.param(["kaito", "serve"], "ngram", id="kaito-default"),
        pytest.param(["kaito", "serve", "--speculative", "off"], "off", id="kaito-off"),
        pytest.param(["pykaito-runtime", "llamacpp", "--model", "embedded"], "ngram", id="runtime-default"),
        pytest.param(
            ["pykaito-runtime", "llamacpp", "--model", "embedded", "--speculative", "off"],
            "off",
            id="runtime-off",
        ),
    ],
)
def test_both_entry_points_hand_the_speculative_flag_to_the_engine(
    argv: list[str], mode: str, monkeypatch: pytest.MonkeyPatch, spec_log: logging.Logger
) -> None:
    from pykaito.cli import main as cli_main
    from pykaito.runtime import entry
    from pykaito.runtime import serve as serve_module

    engines: list[LlamaCppEngine] = []
    monkeypatch.setattr(serve_module, "serve", lambda eng, *_, **__: engines.append(eng))
    monkeypatch.setattr(sys, "argv", argv)
    if argv[0] == "kaito":
        with pytest.raises(SystemExit) as exited:
            cli_main.main()
        assert exited.value.code in (0, None)
    else:
        entry.main(argv[1:])
    [eng] = engines
    assert eng.settings.speculative == mode
    if argv[0] == "kaito":  # the acceptance rate shows in kaito serve's (otherwise quiet) log
        # the logger's own level: the effective one also depends on what the root logger was given
        assert spec_log.level == (logging.INFO if mode == "ngram" else logging.NOTSET)


def test_a_wrong_speculative_value_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from pykaito.errors import InputError
    from pykaito.runtime.serve import llamacpp_engine

    with pytest.raises(InputError, match="--speculative must be off or ngram, got 'eagle'"):
        llamacpp_engine(embedded_gguf_path(), speculative="eagle")
    result = CliRunner().invoke(cli_app, ["serve", "--speculative", "eagle"])
    assert result.exit_code == 2
    assert "eagle" in result.output and "off" in result.output and "ngram" in result.output


async def test_a_request_opts_out_with_speculative_false(make_client: Any, fake: Any) -> None:
    client = make_client(fake)
    body = {"model": fake.model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for extra, expected in (({}, True), ({"speculative": False}, False), ({"speculative": True}, True)):
        response = await client.post("/v1/chat/completions", json={**body, **extra})
        assert response.status_code == 200, response.text
        assert fake.requests[-1].params.speculative is expected
    response = await client.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 2, "speculative": "no"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "speculative"


def spec_metrics(url: str) -> dict[str, float]:
    page = httpx.get(url + "/metrics", timeout=30).text
    counts = {}
    for name in ("drafts", "draft_tokens", "accepted_tokens"):
        found = re.search(rf'vllm:spec_decode_num_{name}_total\{{model_name="[^"]+"\}} (\S+)', page)
        assert found is not None, name
        counts[name] = float(found.group(1))
    return counts


@pytest.mark.slow
def test_a_served_copy_streams_several_tokens_a_chunk_and_metrics_count_greedy_and_sampled_drafts() -> None:
    import openai

    from pykaito.runtime.serve import start_in_thread
    from pykaito.runtime.settings import ServerSettings

    eng = LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(),
            n_ctx=2 * 512,
            max_running=2,
            threads=1,
            speculative="ngram",
            draft_cost=0.0,
        )
    )
    handle = start_in_thread(eng, ServerSettings(port=0))
    try:
        client = openai.OpenAI(base_url=handle.base_url, api_key="none", max_retries=0, timeout=120)
        messages: Any = [{"role": "user", "content": PROMPTS["copy"]}]
        replies = []
        for extra in ({"speculative": False}, {}):
            stream = client.chat.completions.create(
                model=eng.model_name,
                messages=messages,
                max_tokens=40,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=extra,
            )
            chunks = list(stream)
            content = [c.choices[0].delta.content or "" for c in chunks if c.choices]
            usage = chunks[-1].usage
            assert usage is not None and usage.completion_tokens == 40
            replies.append(("".join(content), len([c for c in content if c])))
        (plain, plain_chunks), (spec, spec_chunks) = replies
        assert spec == plain
        assert spec_chunks < plain_chunks
        greedy_counts = spec_metrics(handle.url)
        assert greedy_counts["accepted_tokens"] > 0
        reply = client.chat.completions.create(
            model=eng.model_name, messages=messages, max_tokens=40, temperature=0.3, seed=5
        )
        assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 40
        sampled_counts = spec_metrics(handle.url)
        for name in ("drafts", "draft_tokens", "accepted_tokens"):
            assert sampled_counts[name] > greedy_counts[name], name
    finally:
        handle.stop()
