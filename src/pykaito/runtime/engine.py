"""The seam between the HTTP server and an inference engine.

The server speaks the OpenAI protocol and turns each request into a ``GenerationRequest``;
an engine turns that into a stream of ``Delta`` values. The llama.cpp engine implements
this for real; tests of the server's callers may use a fake with the same interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# "abort": the server stopped (SIGTERM, Ctrl-C) before the request finished, as vLLM reports it.
FinishReason = Literal["stop", "length", "abort"]


class ChatTemplateError(ValueError):
    """The model's chat template refused the conversation (``raise_exception`` in the template)."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings; each running sequence keeps its own."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: no logprobs; N: the chosen token plus N alternatives
    grammar: str | None = None  # a GBNF grammar constraining the output (json_object, json_schema)
    speculative: bool = True  # the engine may verify draft tokens (same output); False opts out
    ignore_eos: bool = False  # go on past end-of-sequence tokens until max_tokens (benchmarks)


@dataclass(frozen=True)
class SamplingDefaults:
    """What a request that omits temperature, top_p, top_k or min_p is sampled with.

    The model's own recommendation where it ships one, else llama.cpp's usual chain; a
    request that omits them must not sample the whole distribution at temperature 1, which
    makes small models ramble within a few dozen tokens.
    """

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    source: str = "llama.cpp defaults"


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_tokens: Sequence[int]
    params: SamplingParams


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of generated text. The last delta of a request has ``finish_reason`` set."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0  # on a request's first delta: prompt tokens served from the prefix cache


@dataclass(frozen=True)
class SpecDecodeStats:
    """Totals of speculative decoding since the engine started (vLLM's spec_decode counters)."""

    drafts: int = 0  # verification steps that carried at least one draft token
    draft_tokens: int = 0
    accepted_tokens: int = 0
    accepted_per_pos: tuple[int, ...] = ()  # [i]: drafts whose token at position i was accepted


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    max_running: int
    max_waiting: int
    kv_cache_usage: float = 0.0  # 0..1
    spec_decode: SpecDecodeStats | None = None  # None: the engine does not speculate


@dataclass(frozen=True)
class Health:
    ready: bool
    reason: str = ""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """What the server needs from an engine."""

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1``; 0 while the model is not loaded."""
        ...

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """Applied to the sampling parameters a request leaves out."""
        ...

    def health(self) -> Health: ...

    def stats(self) -> EngineStats: ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text for a conversation, from the model's own chat template.

        Raises ``ChatTemplateError`` when the template refuses the conversation (the client's
        to fix) and ``EngineError`` when the template itself fails or is missing.
        """
        ...

    def supports_tools(self) -> bool:
        """Whether the chat template renders ``tools`` (so the model was shown how to call them)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream the reply. Raises QueueFullError at once when the waiting queue is full.

        Closing the iterator early (a client that went away) frees the sequence and its
        KV cache at once.
        """
        ...

    async def start(self) -> None:
        """Load the model and run a warm-up generation; health() is ready only after it."""
        ...

    async def stop(self) -> None: ...
