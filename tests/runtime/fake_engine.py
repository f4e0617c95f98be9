"""A small engine with the real ``Engine`` interface, for unit tests of the HTTP server.

Tokens are UTF-8 bytes (ids 0..255; 256 is a BOS token added with ``add_special``), so counts
are easy to predict. A generation replays ``reply`` one word at a time, honouring
``max_tokens`` (finish ``length``) and stop strings (finish ``stop``); with a grammar it replies
with a small JSON object. Like the llama.cpp engine, ``generate`` refuses at once with
``QueueFullError`` when running + waiting requests fill the slots and the queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pykaito.errors import EngineError, PromptTooLongError, QueueFullError
from pykaito.runtime.engine import (
    ChatMessage,
    ChatTemplateError,
    Delta,
    EngineStats,
    GenerationRequest,
    Health,
    SamplingDefaults,
    TokenLogprob,
)

BOS = 256
VOCAB = 257
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


class FakeEngine:
    def __init__(
        self,
        *,
        reply: str = "Hello there, I am a fake engine and I answer every prompt alike.",
        max_model_len: int = 512,
        max_running: int = 2,
        max_waiting: int = 2,
        token_delay: float = 0.0,
        load_delay: float = 0.0,
        load_gate: threading.Event | None = None,
        load_error: str | None = None,
        name: str = "fake-model",
        defaults: SamplingDefaults | None = None,
        tools: bool = False,
    ) -> None:
        self.defaults = defaults or SamplingDefaults()
        self.tools = tools
        self.reply = reply
        self._max_model_len = max_model_len
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.token_delay = token_delay
        self.load_delay = load_delay
        self.load_gate = load_gate
        self.load_error = load_error
        self.name = name
        self.ready = load_delay == 0 and load_gate is None and load_error is None
        self.requests: list[GenerationRequest] = []
        self.finished: dict[str, str] = {}  # request id -> "stop" | "length" | "closed"
        self.started = 0
        self.stopped = 0
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._slots: asyncio.Semaphore | None = None

    # -- Engine ------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def health(self) -> Health:
        return Health(ready=True) if self.ready else Health(ready=False, reason="loading the model")

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(self._running, self._waiting, self.max_running, self.max_waiting)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special else []) + list(text.encode())

    def detokenize(self, tokens: Sequence[int]) -> str:
        bad = [t for t in tokens if not 0 <= t < VOCAB]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{VOCAB - 1})")
        return bytes(t for t in tokens if t != BOS).decode(errors="replace")

    @property
    def vocab_size(self) -> int:
        return VOCAB

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        return self.defaults

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        if messages[-1].role == "assistant" and messages[-1].content == "refuse":
            raise ChatTemplateError("the chat template refused the conversation")
        if messages[-1].content == "template bug":
            raise EngineError("the chat template of fake-model failed: 'dict object' has no attribute 'x'")
        text = "".join(f"<{m.role}>{m.content}\n" for m in messages)
        return text + "<assistant>" if add_generation_prompt else text

    def supports_tools(self) -> bool:
        return self.tools

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if not self.ready:
            raise EngineError("the engine is not serving")
        n = len(request.prompt_tokens)
        if n >= self._max_model_len:
            raise PromptTooLongError(f"the prompt has {n} tokens", n, self._max_model_len)
        with self._lock:
            if self._running + self._waiting >= self.max_running + self.max_waiting:
                raise QueueFullError(
                    f"{self._waiting} requests are waiting already: retry shortly", retry_after=2.0
                )
            self._waiting += 1
        self.requests.append(request)
        return self._stream(request)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        slots = self._slots
        outcome = "closed"
        admitted = False
        try:
            await slots.acquire()
            admitted = True
            with self._lock:
                self._waiting -= 1
                self._running += 1
            params = request.params
            reply = self.reply
            if params.grammar:  # a tool call's grammar, or a JSON one
                reply = TOOL_CALL if "<tool_call>" in params.grammar else '{"fake": true}'
            words = reply.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            text_so_far = ""
            for i, piece in enumerate(pieces):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                else:
                    await asyncio.sleep(0)
                tokens = tuple(range(len(piece.encode())))[:1] or (0,)
                logprobs = ()
                if params.logprobs is not None:
                    top = tuple((f"alt{k}", -1.0 - k) for k in range(params.logprobs))
                    logprobs = (TokenLogprob(piece, -0.5, top),)
                candidate = text_so_far + piece
                cut = min((candidate.find(s) for s in params.stop if s in candidate), default=-1)
                if cut >= 0:
                    outcome = "stop"
                    yield Delta(candidate[len(text_so_far) : cut], tokens, logprobs, "stop")
                    return
                text_so_far = candidate
                last = i == len(pieces) - 1
                if i + 1 >= params.max_tokens and not last:
                    outcome = "length"
                    yield Delta(piece, tokens, logprobs, "length")
                    return
                if last:
                    outcome = "stop"
                    yield Delta(piece, tokens, logprobs, "stop")
                    return
                yield Delta(piece, tokens, logprobs)
        finally:
            with self._lock:
                if admitted:
                    self._running -= 1
                else:
                    self._waiting -= 1
            if admitted:
                slots.release()
            self.finished[request.request_id] = outcome

    async def start(self) -> None:
        self.started += 1
        if self.load_delay:
            await asyncio.sleep(self.load_delay)
        gate = self.load_gate
        while gate is not None and not await asyncio.to_thread(gate.wait, 0.05):
            pass  # short waits, so a cancelled start never leaves a thread blocked
        if self.load_error:
            raise EngineError(self.load_error)
        self.ready = True

    async def stop(self) -> None:
        self.stopped += 1
        self.ready = False
