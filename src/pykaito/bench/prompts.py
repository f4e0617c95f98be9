"""Workloads: what the requests of a run ask for.

A workload is a list of conversations; a load worker takes the next one and sends its turns one
after the other, each turn carrying the earlier turns and the server's replies (multi-turn), so
a server with prefix caching shows it. A single-turn workload is conversations of one turn.

- synthetic: prompts of random common words sized to ``input_tokens`` with the server's
  ``/tokenize`` (or an estimate of one token per word where there is none), ``output_tokens``
  asked for each;
- shared prefix: the same ``shared_prefix_tokens`` of text opens every prompt;
- multi-turn: ``turns`` user messages per conversation, over the chat API;
- JSONL: one conversation per line, ``{"messages": [...]}``, ``{"prompt": "..."}`` or ShareGPT's
  ``{"conversations": [{"from": "human", "value": ...}, ...]}``; an optional ``max_tokens``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pykaito.bench.sse import CHAT_PATH, COMPLETIONS_PATH, Request
from pykaito.errors import InputError

_VOCABULARY = """
time person year way day thing man world life hand part child eye woman place work week case
point government company number group problem fact water house river mountain story light city
garden window morning evening summer winter market road bridge friend teacher doctor village
forest ocean island letter music paper table chair school church train station field animal
bird horse stone fire wind cloud rain snow star moon sun country family history language
question answer reason idea power money season lake valley hill tree flower door wall floor
kitchen voice song picture color colour table bread milk apple orange coffee dinner lunch
breakfast game team player ship boat engine machine computer letter word page book library
walks runs sees takes makes finds gives tells asks works calls tries leaves feels becomes quiet
bright small large early late happy strong simple green blue warm cold old young
"""
WORDS = tuple(_VOCABULARY.split())

TokenCounter = Callable[[str], Awaitable[int | None]]


@dataclass(frozen=True)
class Conversation:
    """User turns sent one after the other; ``system`` opens the conversation when set."""

    turns: tuple[str, ...]
    max_tokens: int
    input_tokens: int = 0
    system: str = ""
    messages: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Workload:
    conversations: tuple[Conversation, ...]
    api: str  # "chat" or "completions"
    description: str

    def request(
        self, conv: Conversation, history: list[dict[str, Any]], turn: int, body_extra: dict[str, Any]
    ) -> Request:
        """The request for turn ``turn`` of ``conv`` given the replies so far (``history``)."""
        body: dict[str, Any] = {
            "max_tokens": conv.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **body_extra,
        }
        if self.api == "completions":
            body["prompt"] = (conv.system + conv.turns[turn]) if turn == 0 else conv.turns[turn]
            return Request(COMPLETIONS_PATH, body, conv.input_tokens)
        if conv.messages:
            messages = list(conv.messages)
        else:
            messages = [{"role": "system", "content": conv.system}] if conv.system else []
            messages += history
            messages.append({"role": "user", "content": conv.turns[turn]})
        body["messages"] = messages
        return Request(CHAT_PATH, body, conv.input_tokens if turn == 0 else 0)


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=max(1, words)))


async def sized_text(
    rng: random.Random, tokens: int, count: TokenCounter, per_word: float
) -> tuple[str, int]:
    """Random words that the server counts as ``tokens`` tokens (within a token or two)."""
    words = max(1, round(tokens / per_word))
    text = random_text(rng, words)
    counted = round(words * per_word)
    for _ in range(4):
        found = await count(text)
        if found is None:
            return text, counted
        counted = found
        if abs(counted - tokens) <= 1:
            break
        words = max(1, words + round((tokens - counted) / per_word))
        text = random_text(rng, words)
    return text, counted


async def tokens_per_word(count: TokenCounter) -> float:
    """How many tokens one random word takes on this server (1.0 without /tokenize)."""
    sample = random_text(random.Random(0), 400)
    counted = await count(sample)
    return counted / 400 if counted else 1.0


async def synthetic(
    count: TokenCounter,
    *,
    input_tokens: int,
    output_tokens: int,
    shared_prefix_tokens: int = 0,
    turns: int = 1,
    pool: int = 64,
    api: str | None = None,
    seed: int = 0,
) -> Workload:
    """``pool`` different conversations of random words sized with ``count`` (the server's /tokenize)."""
    if input_tokens < 1 or output_tokens < 1:
        raise InputError("--input-tokens and --output-tokens must be at least 1")
    if turns < 1:
        raise InputError("--turns must be at least 1")
    rng = random.Random(seed)
    per_word = await tokens_per_word(count)
    system = ""
    prefix_counted = 0
    if shared_prefix_tokens > 0:
        system, prefix_counted = await sized_text(rng, shared_prefix_tokens, count, per_word)
        system += "\n\n"
    conversations = []
    for _ in range(pool):
        first, counted = await sized_text(rng, input_tokens, count, per_word)
        later = tuple(random_text(rng, max(1, round(input_tokens / per_word))) for _ in range(turns - 1))
        conversations.append(
            Conversation((first, *later), output_tokens, counted + prefix_counted, system=system)
        )
    chosen = api or ("chat" if turns > 1 else "completions")
    if chosen == "completions" and turns > 1:
        raise InputError("--turns needs the chat API: drop --api completions")
    what = f"synthetic {input_tokens} in / {output_tokens} out tokens"
    if shared_prefix_tokens:
        what += f", shared prefix {shared_prefix_tokens} tokens"
    if turns > 1:
        what += f", {turns} turns"
    return Workload(tuple(conversations), chosen, what)


def from_jsonl(path: Path, default_max_tokens: int, api: str | None = None) -> Workload:
    """Conversations from a JSONL file (see the module docstring for the line shapes)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    conversations = []
    kinds = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg}): write one JSON object per line") from exc
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object with messages, prompt or conversations")
        max_tokens = data.get("max_tokens", default_max_tokens)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise InputError(f"{where}: max_tokens must be a positive integer")
        if "conversations" in data:
            data = {"messages": _sharegpt(data["conversations"], where), "max_tokens": max_tokens}
        if "messages" in data:
            messages = _messages(data["messages"], where)
            conversations.append(Conversation(("",), max_tokens, messages=tuple(messages)))
            kinds.add("chat")
        elif isinstance(data.get("prompt"), str) and data["prompt"]:
            conversations.append(Conversation((data["prompt"],), max_tokens))
            kinds.add("completions")
        else:
            raise InputError(f"{where}: give messages (a list), prompt (a string) or conversations")
    if not conversations:
        raise InputError(f"{path} holds no conversations: write one JSON object per line")
    if len(kinds) > 1:
        raise InputError(f"{path} mixes messages and prompt lines: use one kind per file")
    chosen = api or kinds.pop()
    if chosen == "completions" and any(c.messages for c in conversations):
        raise InputError(f"{path} holds chat messages: use --api chat")
    if chosen == "chat":
        conversations = [
            c
            if c.messages
            else Conversation(("",), c.max_tokens, messages=({"role": "user", "content": c.turns[0]},))
            for c in conversations
        ]
    return Workload(tuple(conversations), chosen, f"{len(conversations)} conversations from {path.name}")


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise InputError(f"{where}: messages[{i}] needs a role of system, user, assistant or tool")
    while value and value[-1].get("role") == "assistant":
        value = value[:-1]  # a recorded reply: the server writes its own
    if not value:
        raise InputError(f"{where}: messages hold only assistant replies: add a user message")
    return [dict(m) for m in value]


def _sharegpt(value: Any, where: str) -> list[dict[str, Any]]:
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    if not isinstance(value, list):
        raise InputError(f"{where}: conversations must be a list of {{from, value}} objects")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("from") not in roles:
            raise InputError(f"{where}: conversations[{i}] needs from: human, gpt or system")
        out.append({"role": roles[turn["from"]], "content": str(turn.get("value", ""))})
    return out
