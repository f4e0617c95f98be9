"""Workloads: synthetic prompts sized with a token counter, and JSONL conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykaito.bench.prompts import from_jsonl, synthetic
from pykaito.errors import InputError


async def words(text: str) -> int | None:
    return len(text.split()) * 2  # a tokenizer that spends two tokens on every word


async def no_tokenizer(text: str) -> int | None:
    return None


async def test_synthetic_prompts_are_sized_with_the_counter() -> None:
    w = await synthetic(words, input_tokens=100, output_tokens=7, pool=5)
    assert w.api == "completions" and len(w.conversations) == 5
    for conv in w.conversations:
        assert abs(await words(conv.turns[0]) - 100) <= 1  # type: ignore[operator]
        assert conv.input_tokens == await words(conv.turns[0])
        assert conv.max_tokens == 7
    assert len({c.turns[0] for c in w.conversations}) == 5


async def test_without_tokenize_one_token_per_word_is_assumed() -> None:
    w = await synthetic(no_tokenizer, input_tokens=40, output_tokens=3, pool=2)
    assert all(len(c.turns[0].split()) == 40 for c in w.conversations)


async def test_shared_prefix_and_turns() -> None:
    w = await synthetic(words, input_tokens=20, output_tokens=3, shared_prefix_tokens=50, turns=3, pool=3)
    assert w.api == "chat"
    prefixes = {c.system for c in w.conversations}
    assert len(prefixes) == 1 and abs(await words(prefixes.pop()) - 50) <= 1  # type: ignore[operator]
    conv = w.conversations[0]
    assert len(conv.turns) == 3
    history = [{"role": "user", "content": conv.turns[0]}, {"role": "assistant", "content": "reply"}]
    request = w.request(conv, history, 1, {"model": "m"})
    roles = [m["role"] for m in request.body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}


async def test_turns_need_the_chat_api() -> None:
    with pytest.raises(InputError, match="chat API"):
        await synthetic(words, input_tokens=20, output_tokens=3, turns=2, api="completions")


def test_jsonl_shapes(tmp_path: Path) -> None:
    path = tmp_path / "convs.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        "\n"
        '{"conversations": [{"from": "human", "value": "tell me"}], "max_tokens": 9}\n'
    )
    w = from_jsonl(path, 32)
    assert w.api == "chat" and len(w.conversations) == 2
    first = w.request(w.conversations[0], [], 0, {})
    assert first.body["messages"] == [{"role": "user", "content": "hi"}]  # the recorded reply is dropped
    assert first.body["max_tokens"] == 32
    assert w.request(w.conversations[1], [], 0, {}).body["max_tokens"] == 9


def test_jsonl_prompts_go_to_completions(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Once upon a time"}\n')
    w = from_jsonl(path, 16)
    assert w.api == "completions"
    assert w.request(w.conversations[0], [], 0, {}).body["prompt"] == "Once upon a time"
    chat = from_jsonl(path, 16, api="chat")
    request = chat.request(chat.conversations[0], [], 0, {})
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": "Once upon a time"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not json\n", r"x.jsonl:1: not JSON", id="not-json"),
        pytest.param('{"a": 1}\n', r"x.jsonl:1: give messages", id="no-known-key"),
        pytest.param(
            '{"prompt": "p"}\n{"messages": "x"}\n', r"x.jsonl:2: messages must be", id="bad-messages"
        ),
        pytest.param('{"prompt": "p", "max_tokens": 0}\n', r"max_tokens must be", id="bad-max-tokens"),
        pytest.param("\n\n", r"holds no conversations", id="empty"),
        pytest.param(
            '{"prompt": "p"}\n{"messages": [{"role": "user", "content": "q"}]}\n', "mixes", id="mixed"
        ),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        from_jsonl(path, 16)


def test_missing_jsonl_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        from_jsonl(tmp_path / "nope.jsonl", 16)
