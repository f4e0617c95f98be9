"""Tool calling with the real SmolLM2 model under a chat template that renders tools, via the openai client.

SmolLM2's own template has no tool support (such requests get 400: test_real_server.py); here the
server is given a ChatML template that shows the model the tools, as ``--chat-template-file`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings
from pykaito.runtime.serve import ServerHandle, start_in_thread
from pykaito.runtime.settings import ServerSettings

pytestmark = pytest.mark.slow

TEMPLATE = Path(__file__).parent / "data" / "chatml_tools.jinja"
MODEL = EMBEDDED_PRESET
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
        },
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    engine = LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(),
            n_ctx=4 * 1024,
            max_running=4,
            max_waiting=8,
            threads=1,
            served_model_name=MODEL,
            chat_template=TEMPLATE.read_text(),
        )
    )
    assert engine.supports_tools() is False  # not before it has loaded its template
    handle = start_in_thread(engine, ServerSettings(port=0))
    assert engine.supports_tools()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)


def test_required_makes_one_call_with_arguments_that_match_the_schema(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=64,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")  # type: ignore[union-attr]


def test_a_streamed_call_arrives_as_a_tool_calls_delta(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c for chunk in chunks for choice in chunk.choices for c in choice.delta.tool_calls or []]
    assert len(calls) == 1
    assert calls[0].index == 0 and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments or "")
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_auto_answers_text_or_a_well_formed_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=48)
    choice = reply.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
            assert isinstance(json.loads(call.function.arguments), dict)  # type: ignore[union-attr]
    else:
        assert choice.finish_reason in ("stop", "length")
        assert isinstance(choice.message.content, str)


def test_a_tool_result_in_the_history_gets_a_reply(client: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 degrees"},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=16
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.tool_calls is None
