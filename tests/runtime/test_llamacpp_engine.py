"""The llama.cpp engine with the real SmolLM2 model: streams, limits, concurrency, structure.

Text varies with threads and batch composition, so tests assert structure, token counts and
finish reasons; where a text is compared, both runs have the same batch shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pykaito.errors import EngineError, PromptTooLongError, QueueFullError
from pykaito.runtime.engine import (
    ChatMessage,
    ChatTemplateError,
    Delta,
    GenerationRequest,
    SamplingDefaults,
    SamplingParams,
)
from pykaito.runtime.engines import llamacpp, llamacpp_native
from pykaito.runtime.engines.llamacpp import LlamaCppEngine
from pykaito.runtime.grammar import json_object_grammar, json_schema_grammar
from tests.runtime.engine_fixture import MAX_RUNNING, MAX_WAITING, N_CTX, engine

__all__ = ["engine"]

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


def chat(eng: LlamaCppEngine, text: str) -> list[int]:
    return eng.tokenize(eng.render_chat([ChatMessage("user", text)]))


async def collect(
    eng: LlamaCppEngine, prompt: list[int], params: SamplingParams, rid: str = "r"
) -> list[Delta]:
    return [d async for d in eng.generate(GenerationRequest(rid, prompt, params))]


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


def ids(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_engine_is_ready_and_reports_its_limits(engine: LlamaCppEngine) -> None:
    assert engine.health().ready
    assert engine.model_name == "smollm2-135m-instruct"
    assert engine.max_model_len == N_CTX // MAX_RUNNING
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.max_running, stats.max_waiting) == (0, 0, 8, MAX_WAITING)


def test_chat_template_from_the_gguf(engine: LlamaCppEngine) -> None:
    prompt = engine.render_chat([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi there")])
    assert "<|im_start|>system\nBe brief.<|im_end|>" in prompt
    assert "<|im_start|>user\nHi there<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # special markers tokenize as single tokens, not as their characters
    tokens = engine.tokenize("<|im_start|>user")
    assert len(tokens) <= 2
    assert engine.detokenize(engine.tokenize("Hello world", add_special=False)) == "Hello world"


async def test_stream_structure_and_exact_usage(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "What is the capital of France?")
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=24, temperature=0.0))
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length")
    generated = ids(deltas)
    assert 1 <= len(generated) <= 24
    if last.finish_reason == "length":
        assert len(generated) == 24
    else:
        assert len(generated) < 24
    assert text(deltas).strip()
    assert text(deltas) == engine.detokenize(generated)


async def test_max_tokens_ends_with_length(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Write a long story about a dragon who learns to fly.")
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=8, temperature=0.0))
    assert deltas[-1].finish_reason == "length"
    assert len(ids(deltas)) == 8


async def test_ignore_eos_goes_on_to_max_tokens(engine: LlamaCppEngine) -> None:
    # a reply that ends early on its own (end of sequence) runs to max_tokens with ignore_eos,
    # as vLLM's parameter does: what a benchmark needs to measure the tokens it asked for
    prompt = chat(engine, "Reply with the single word yes and nothing else.")
    natural = await collect(engine, prompt, SamplingParams(max_tokens=48, temperature=0.0))
    assert natural[-1].finish_reason == "stop"
    assert len(ids(natural)) < 48, text(natural)
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)
    forced = await collect(engine, prompt, params)
    assert forced[-1].finish_reason == "length"
    assert len(ids(forced)) == 48


async def test_stop_string_is_never_emitted(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "List three colours, one per line.")
    reference = text(await collect(engine, prompt, SamplingParams(max_tokens=24, temperature=0.0)))
    words = [w for w in reference.split() if len(w) >= 3]
    assert len(words) >= 3, reference
    stop = words[len(words) // 2][:3]
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=24, temperature=0.0, stop=(stop, "@@@")))
    assert deltas[-1].finish_reason == "stop"
    assert stop not in text(deltas)
    assert text(deltas) == reference.split(stop)[0]
    assert 1 <= len(ids(deltas)) < 24


async def test_eight_concurrent_streams_complete_without_mixing(engine: LlamaCppEngine) -> None:
    prompts = [chat(engine, f"Tell me a fact about the number {n}.") for n in range(MAX_RUNNING)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.stats().running)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(
        *(
            collect(engine, p, SamplingParams(max_tokens=16, temperature=0.0), f"c{i}")
            for i, p in enumerate(prompts)
        )
    )
    watcher.cancel()
    assert peak == MAX_RUNNING
    for deltas in results:
        assert deltas[-1].finish_reason in ("stop", "length")
        assert sum(d.finish_reason is not None for d in deltas) == 1
        generated = ids(deltas)
        assert 1 <= len(generated) <= 16
        assert deltas[-1].finish_reason == "stop" or len(generated) == 16
        assert text(deltas) == engine.detokenize(generated)
    await wait_until(lambda: engine.stats().running == 0)


async def test_closing_the_stream_frees_the_slot(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Write a long story about a dragon.")
    stream = engine.generate(GenerationRequest("cancel-me", prompt, SamplingParams(max_tokens=400)))
    first = await anext(stream)
    assert first.finish_reason is None
    assert engine.stats().running == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.stats().running == 0
    # the slot and its KV cache are reusable at once
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=4, temperature=0.0))
    assert len(ids(deltas)) == 4


async def test_a_sequence_moved_to_a_lower_slot_keeps_its_context(engine: LlamaCppEngine) -> None:
    # two identical greedy streams share every decode step, so they produce the same tokens;
    # when a filler between them and another filler closes, the twin in the highest slot moves
    # down into the hole, and only a faithful copy of its KV cache keeps it in step with the
    # other twin. Plain-text prompts share no cached prefix, so slots are handed out lowest first.
    long = SamplingParams(max_tokens=400)
    fillers = [
        engine.generate(GenerationRequest(f"filler{i}", engine.tokenize(f"Filler {i}: hello"), long))
        for i in range(2)
    ]
    for filler in fillers:
        await anext(filler)
    twin_prompt = engine.tokenize("Explain in detail how bread is made, step by step:")
    params = SamplingParams(max_tokens=24, temperature=0.0)
    streams = [engine.generate(GenerationRequest(f"twin{i}", twin_prompt, params)) for i in range(2)]
    firsts = [await anext(s) for s in streams]
    slots = [stream._seq.slot for stream in [*fillers, *streams]]  # type: ignore[attr-defined]
    assert slots == [0, 1, 2, 3]
    moves = engine.moves
    await fillers[1].aclose()  # type: ignore[attr-defined]
    rests = await asyncio.gather(*(drain(s) for s in streams))
    await fillers[0].aclose()  # type: ignore[attr-defined]
    assert engine.moves == moves + 1
    outputs = [ids([first, *rest]) for first, rest in zip(firsts, rests, strict=True)]
    assert len(outputs[0]) == 24 or rests[0][-1].finish_reason == "stop"
    assert outputs[0] == outputs[1]


async def test_a_repeated_prompt_reuses_the_cached_prefix(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Name three colours of the rainbow.")
    params = SamplingParams(max_tokens=12, temperature=0.0)
    first = await collect(engine, prompt, params, "cold")
    again = await collect(engine, prompt, params, "warm")
    assert again[0].cached_tokens == len(prompt) - 1
    assert all(d.cached_tokens == 0 for d in again[1:])
    assert first[0].cached_tokens < len(prompt) - 1
    # the cached keys and values are the ones the first request computed: same greedy tokens
    assert ids(again) == ids(first)


@pytest.mark.parametrize(
    ("change", "plain"),
    [
        ({}, True),
        ({"temperature": 0.7}, False),
        ({"grammar": 'root ::= "a"'}, False),
        ({"repetition_penalty": 1.1}, False),
        ({"frequency_penalty": 0.5}, False),
        ({"presence_penalty": 0.5}, False),
        ({"top_k": 5, "seed": 3}, True),  # no effect at temperature 0
    ],
)
def test_which_requests_skip_the_native_sampler(change: dict[str, object], plain: bool) -> None:
    params = dataclasses.replace(GREEDY, **change)  # type: ignore[arg-type]
    assert llamacpp_native.is_plain_greedy(params) is plain


async def test_greedy_argmax_picks_what_the_native_sampler_picks(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [chat(engine, q) for q in ("List five fruits.", "Why is the sky blue?", "Describe a cat.")]
    params = SamplingParams(max_tokens=24, temperature=0.0)

    async def run(tag: str) -> list[list[int]]:
        runs = [collect(engine, p, params, f"{tag}{i}") for i, p in enumerate(prompts)]
        return [ids(deltas) for deltas in await asyncio.gather(*runs)]

    assert llamacpp_native.is_plain_greedy(params)
    fast = await run("argmax")
    monkeypatch.setattr(llamacpp, "is_plain_greedy", lambda _: False)
    assert await run("sampler") == fast


async def test_the_next_chat_turn_starts_from_the_cached_conversation(engine: LlamaCppEngine) -> None:
    question = "What is the capital of France?"
    turn1 = chat(engine, question)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    reply = await collect(engine, turn1, params, "turn1")
    messages = [
        ChatMessage("user", question),
        ChatMessage("assistant", text(reply)),
        ChatMessage("user", "And of Italy?"),
    ]
    turn2 = engine.tokenize(engine.render_chat(messages))
    answer = await collect(engine, turn2, params, "turn2")
    # the whole first prompt at least (the reply may re-tokenise differently) came from the cache
    assert answer[0].cached_tokens >= len(turn1)
    assert answer[-1].finish_reason in ("stop", "length")


async def test_cancelled_consumer_frees_the_slot(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Count from one to one hundred.")

    async def consume() -> None:
        async for _ in engine.generate(GenerationRequest("task", prompt, SamplingParams(max_tokens=400))):
            pass

    task = asyncio.create_task(consume())
    await wait_until(lambda: engine.stats().running == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().running == 0


async def test_full_queue_raises_at_once(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Write a long story.")
    streams = []
    try:
        with pytest.raises(QueueFullError, match="max_waiting"):
            for i in range(MAX_RUNNING + MAX_WAITING + 20):
                streams.append(
                    engine.generate(GenerationRequest(f"q{i}", prompt, SamplingParams(max_tokens=200)))
                )
                await asyncio.sleep(0)  # let the decode thread admit what it can
        assert len(streams) == MAX_RUNNING + MAX_WAITING
        await wait_until(lambda: engine.stats().running == MAX_RUNNING)
        assert engine.stats().waiting == MAX_WAITING
    finally:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (0, 0)


async def test_too_long_prompt_is_rejected_before_queueing(engine: LlamaCppEngine) -> None:
    prompt = engine.tokenize("word " * engine.max_model_len, add_special=False)[: engine.max_model_len]
    with pytest.raises(PromptTooLongError, match=f"{engine.max_model_len} tokens") as err:
        engine.generate(GenerationRequest("long", prompt, GREEDY))
    assert err.value.prompt_tokens == engine.max_model_len
    assert engine.stats().waiting == 0


async def test_generation_stops_at_the_context_limit(engine: LlamaCppEngine) -> None:
    limit = engine.max_model_len
    prompt = engine.tokenize("word " * limit, add_special=False)[: limit - 3]
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=50, temperature=0.0))
    # prompt and completion together never exceed the context of one sequence
    assert deltas[-1].finish_reason in ("length", "stop")
    assert len(ids(deltas)) <= 3
    if deltas[-1].finish_reason == "length":
        assert len(prompt) + len(ids(deltas)) == limit


async def test_json_schema_output_parses(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
    }
    grammar = json_schema_grammar(schema)
    prompt = chat(engine, "Give the weather in Paris as JSON.")
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=48, temperature=0.0, grammar=grammar))
    assert deltas[-1].finish_reason == "stop"
    value = json.loads(text(deltas))
    assert set(value) == {"city", "sunny"}
    assert isinstance(value["sunny"], bool)


async def test_json_object_grammar_forces_an_object(engine: LlamaCppEngine) -> None:
    grammar = json_object_grammar()
    prompt = chat(engine, "Say hello.")
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=6, temperature=0.0, grammar=grammar))
    assert text(deltas).startswith("{")


async def test_token_ids_outside_the_vocabulary_are_rejected(engine: LlamaCppEngine) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        engine.generate(GenerationRequest("v", [1, 2, 10**7], GREEDY))
    with pytest.raises(ValueError, match="must lie in"):
        engine.detokenize([-1])
    assert engine.stats().waiting == 0


async def test_invalid_grammar_is_rejected(engine: LlamaCppEngine) -> None:
    # grammars are compiled on the decode thread when the request is admitted, not on the event loop
    stream = engine.generate(GenerationRequest("g", chat(engine, "Hi"), SamplingParams(grammar="root ::= (")))
    with pytest.raises(ValueError, match="GBNF"):
        await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.stats().waiting == 0
    assert engine.stats().running == 0


async def test_logprobs_follow_the_tokens(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Name a fruit.")
    deltas = await collect(engine, prompt, SamplingParams(max_tokens=6, temperature=0.0, logprobs=2))
    for d in deltas:
        assert len(d.logprobs) == len(d.token_ids)
        for lp in d.logprobs:
            assert lp.logprob <= 0.0
            assert len(lp.top) == 2
            assert lp.top[0][1] >= lp.top[1][1]
            # greedy sampling picks the most likely token
            assert lp.logprob == pytest.approx(lp.top[0][1])


async def test_seed_makes_sampling_repeatable(engine: LlamaCppEngine) -> None:
    prompt = chat(engine, "Invent a name for a cat.")
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, top_k=40, seed=1234)
    first = await collect(engine, prompt, params)
    second = await collect(engine, prompt, params)
    assert ids(first) == ids(second)


async def test_penalties_and_min_p_are_accepted(engine: LlamaCppEngine) -> None:
    params = SamplingParams(
        max_tokens=8,
        temperature=0.7,
        min_p=0.05,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        repetition_penalty=1.2,
        seed=7,
    )
    deltas = await collect(engine, chat(engine, "Repeat the word cat."), params)
    assert deltas[-1].finish_reason in ("stop", "length")
    assert 1 <= len(ids(deltas)) <= 8


async def test_a_stream_collected_while_the_scheduler_lock_is_held_does_not_deadlock(
    engine: LlamaCppEngine,
) -> None:
    long = dataclasses.replace(GREEDY, max_tokens=200)
    stream = engine.generate(GenerationRequest("gc", chat(engine, "Tell a long story."), long))
    await anext(stream)
    assert engine.stats().running == 1
    # A finalizer can run on any thread, one holding the scheduler's lock included: it must not block.
    with engine._scheduler._lock:
        del stream
        gc.collect()
    await wait_until(lambda: engine.stats().running == 0 and engine.stats().waiting == 0, within=30)


def test_smollm2_is_served_with_llama_cpp_sampling_defaults_and_no_tool_support(
    engine: LlamaCppEngine,
) -> None:
    # the GGUF carries no general.sampling.* recommendation
    assert engine.sampling_defaults == SamplingDefaults()
    # its ChatML template has no tools section: tool requests get 400 (see test_real_server.py)
    assert not engine.supports_tools()
    assert engine.vocab_size > 0


def test_the_generation_prompt_can_be_left_out(engine: LlamaCppEngine) -> None:
    messages = [ChatMessage("user", "Hi")]
    with_prompt = engine.render_chat(messages)
    without = engine.render_chat(messages, add_generation_prompt=False)
    assert with_prompt.startswith(without)
    assert with_prompt.removeprefix(without).strip() == "<|im_start|>assistant"


def test_a_template_failure_is_the_servers_error(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jinja2.sandbox

    raise_exception = engine._template.environment.globals["raise_exception"]
    broken = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string("{{ messages[0].content.nope() }}")
    monkeypatch.setattr(engine, "_template", broken)
    with pytest.raises(EngineError, match="chat template of smollm2-135m-instruct failed"):
        engine.render_chat([ChatMessage("user", "Hi")])
    refusing = jinja2.sandbox.ImmutableSandboxedEnvironment()
    refusing.globals["raise_exception"] = raise_exception
    monkeypatch.setattr(engine, "_template", refusing.from_string("{{ raise_exception('no system role') }}"))
    with pytest.raises(ChatTemplateError, match="no system role"):
        engine.render_chat([ChatMessage("user", "Hi")])
