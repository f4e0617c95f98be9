"""The chat client: one library over the OpenAI API for the terminal chat and the web app.

    client = ChatClient("http://localhost:8080")
    reply = client.stream_chat([{"role": "user", "content": "hi"}], ChatParams(max_tokens=64))
    for text in reply:
        print(text, end="")
    print(reply.stats.tokens_per_s)

Connection errors are retried with exponential backoff before the first token arrives (a
reply is never retried half-way, so text is never duplicated); HTTP 4xx answers are not
retried. Every failure becomes a ``ChatError`` whose message is one friendly sentence.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar, cast

import httpx
import openai

from pykaito.client.endpoint import (
    API_KEY_ENV,
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    default_endpoint,
    normalize_endpoint,
    unreachable_message,
)
from pykaito.errors import PykaitoError

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "ChatClient",
    "ChatError",
    "ChatParams",
    "ChatReply",
    "EndpointUnreachable",
    "HealthStatus",
    "ReplyStats",
    "ServerNotReady",
    "SessionTotals",
    "default_endpoint",
    "normalize_endpoint",
    "unreachable_message",
]

log = logging.getLogger(__name__)


Role = Literal["system", "user", "assistant"]
_T = TypeVar("_T")


class ChatError(PykaitoError):
    """A chat request failed; the message is one sentence that says what to do next."""


class EndpointUnreachable(ChatError):
    """Nothing answers at the endpoint (refused, timed out, unknown host)."""


class ServerNotReady(ChatError):
    """The server answers but is still loading its model (HTTP 503)."""


@dataclass(frozen=True)
class ChatParams:
    """Sampling settings sent with each request."""

    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float = 1.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class ReplyStats:
    """What one reply cost and how fast it came.

    ``ttft_s`` is the time from sending the request to the first text; ``tokens_per_s`` is
    the decode rate after it. Token counts come from the server's usage report when it sends
    one (``usage_reported``), otherwise from the number of streamed chunks.
    """

    prompt_tokens: int | None
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    tokens_per_s: float | None
    finish_reason: str | None
    usage_reported: bool

    def summary(self) -> str:
        parts = [f"{self.completion_tokens} tokens"]
        if self.prompt_tokens is not None:
            parts[0] = f"{self.prompt_tokens} → {self.completion_tokens} tokens"
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s * 1000:.0f} ms")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        parts.append(f"{self.duration_s:.2f} s")
        if self.finish_reason and self.finish_reason != "stop":
            parts.append(self.finish_reason)
        return " · ".join(parts)


@dataclass(frozen=True)
class HealthStatus:
    """What /health said: ``reachable`` (something answered) and ``ready`` (HTTP 200)."""

    endpoint: str
    reachable: bool
    ready: bool
    detail: str

    @property
    def label(self) -> str:
        if self.ready:
            return "connected"
        return "loading" if self.reachable else "offline"


class ChatReply:
    """A streaming reply: iterate for text deltas; ``stats`` is set once it ends.

    ``close()`` stops the reply early (the server frees the sequence); the text received so
    far stays in ``text`` and ``stats.finish_reason`` becomes ``"stopped"``. A reply the
    server cuts or the connection loses ends with ``"error"``; one that runs into
    ``max_tokens`` with ``"length"``.
    """

    def __init__(self, chunks: openai.Stream[Any], started: float, endpoint: str) -> None:
        self._chunks = chunks
        self._started = started
        self._endpoint = endpoint
        self._pieces: list[str] = []
        self._first: float | None = None
        self._last: float | None = None
        self._chunk_count = 0
        self._usage: tuple[int, int] | None = None
        self._finish: str | None = None
        self._closed = False
        self.stats: ReplyStats | None = None
        self.model: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks:
                if self._closed:
                    break
                self.model = self.model or getattr(chunk, "model", None)
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    self._usage = (int(usage.prompt_tokens), int(usage.completion_tokens))
                for choice in chunk.choices or ():
                    if choice.finish_reason:
                        self._finish = str(choice.finish_reason)
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        now = time.perf_counter()
                        if self._first is None:
                            self._first = now
                        self._last = now
                        self._chunk_count += 1
                        self._pieces.append(piece)
                        yield piece
            if self._finish is None and not self._closed:
                self._finish = "error"  # the stream ended without saying why: the server cut it
        except openai.APIStatusError as exc:
            self._finish = self._finish or "error"
            raise ChatError(_status_message(self._endpoint, exc)) from exc
        except (openai.APIError, httpx.HTTPError, OSError) as exc:
            if self._closed:
                return
            self._finish = self._finish or "error"
            raise ChatError(
                f"the connection to {self._endpoint} broke during the reply ({type(exc).__name__}): try again"
            ) from exc
        except Exception as exc:  # the transport's own errors, named by another package
            if self._closed:
                return
            self._finish = self._finish or "error"
            raise ChatError(
                f"the reply from {self._endpoint} was cut off ({type(exc).__name__}): try again"
            ) from exc
        finally:
            self._finish_stats()

    def close(self) -> None:
        """Stop the reply; safe to call from another thread or twice."""
        if self._closed:
            return
        self._closed = True
        if self._finish is None:
            self._finish = "stopped"
        try:
            self._chunks.close()
        except Exception:  # closing a broken stream must not raise
            log.debug("closing the stream failed", exc_info=True)
        self._finish_stats()

    def _finish_stats(self) -> None:
        end = time.perf_counter()
        if self.stats is not None and self.stats.finish_reason == self._finish:
            return
        if self._usage is not None and not (self._closed and self._finish == "stopped"):
            prompt: int | None = self._usage[0]
            completion = self._usage[1]
            reported = True
        else:
            prompt, completion, reported = None, self._chunk_count, False
        ttft = None if self._first is None else self._first - self._started
        rate = None
        if self._first is not None and self._last is not None and completion > 1:
            span = self._last - self._first
            if span > 0:
                rate = (completion - 1) / span
        self.stats = ReplyStats(
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_s=ttft,
            duration_s=end - self._started,
            tokens_per_s=rate,
            finish_reason=self._finish if self._finish or self._closed else "error",
            usage_reported=reported,
        )


def _status_message(endpoint: str, exc: openai.APIStatusError) -> str:
    detail = ""
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            detail = str(error.get("message", "") or "")
        elif isinstance(body.get("detail"), str):
            detail = str(body["detail"])
    detail = detail or exc.message
    status = exc.status_code
    if status in (401, 403):
        return f"{endpoint} refused the API key (HTTP {status}): set {API_KEY_ENV} to the server's key"
    if status == 404:
        return f"{endpoint} answered HTTP 404 ({detail}): check the endpoint and the model name"
    if status == 503:
        return f"{endpoint} is still loading its model (HTTP 503): wait a moment and try again"
    if status == 429:
        return f"{endpoint} is busy (HTTP 429): wait a moment and try again"
    return f"{endpoint} answered HTTP {status}: {detail}"


class ChatClient:
    """Talk to one OpenAI-compatible endpoint.

    ``retries`` and ``backoff_s`` govern retries of connection errors (and 502/503/504 answers
    while a server starts): attempt n waits ``backoff_s * 2**n`` seconds. 4xx answers fail at once.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = normalize_endpoint(endpoint) if endpoint else default_endpoint()
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._timeout_s = timeout_s
        self._openai = openai.OpenAI(
            api_key=self.api_key or "not-needed",
            base_url=f"{self.endpoint}/v1",
            timeout=openai.Timeout(timeout_s, connect=5.0),
            max_retries=0,
        )

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def health(self, timeout_s: float = 3.0) -> HealthStatus:
        """One GET /health; never raises."""
        try:
            response = httpx.get(f"{self.endpoint}/health", headers=self._headers(), timeout=timeout_s)
        except httpx.HTTPError:
            return HealthStatus(self.endpoint, False, False, unreachable_message(self.endpoint))
        except OSError as exc:  # pragma: no cover - httpx wraps these, kept for odd transports
            return HealthStatus(self.endpoint, False, False, f"{unreachable_message(self.endpoint)} ({exc})")
        if response.status_code == 200:
            return HealthStatus(self.endpoint, True, True, "ready")
        if response.status_code == 503:
            return HealthStatus(self.endpoint, True, False, "the server is loading its model")
        return HealthStatus(self.endpoint, True, False, f"/health answered HTTP {response.status_code}")

    def wait_ready(self, timeout_s: float, interval_s: float = 0.5) -> HealthStatus:
        """Poll /health until it is ready or the time is up; returns the last answer."""
        deadline = time.monotonic() + timeout_s
        status = self.health()
        while not status.ready and time.monotonic() < deadline:
            self._sleep(interval_s)
            status = self.health()
        return status

    def list_models(self) -> list[str]:
        """The ids /v1/models lists, in the server's order."""
        page = self._call(lambda: self._openai.models.list())
        return [model.id for model in page.data]

    def count_tokens(self, messages: Sequence[Mapping[str, str]], model: str | None = None) -> int | None:
        """The prompt tokens of a conversation, from the server's /tokenize; None where it has none.

        For a reply stopped before the server reported its usage: the prompt still cost tokens.
        """
        body: dict[str, Any] = {"messages": [dict(m) for m in messages]}
        if model:
            body["model"] = model
        try:
            response = httpx.post(
                f"{self.endpoint}/tokenize", json=body, headers=self._headers(), timeout=10.0
            )
            count = response.json().get("count") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return count if isinstance(count, int) else None

    def default_model(self) -> str:
        models = self.list_models()
        if not models:
            raise ChatError(f"{self.endpoint} serves no model: check the server's log")
        return models[0]

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        params: ChatParams | None = None,
        *,
        model: str | None = None,
    ) -> ChatReply:
        """Start a streaming reply; connection errors are retried before it starts."""
        params = params or ChatParams()
        chosen = model or self.default_model()
        started = time.perf_counter()

        def create() -> openai.Stream[Any]:
            nonlocal started
            started = time.perf_counter()
            return self._openai.chat.completions.create(
                model=chosen,
                messages=cast(Any, [dict(m) for m in messages]),
                stream=True,
                stream_options={"include_usage": True},
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                top_p=params.top_p,
            )

        chunks = self._call(create)
        reply = ChatReply(chunks, started, self.endpoint)
        reply.model = chosen
        return reply

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        params: ChatParams | None = None,
        *,
        model: str | None = None,
    ) -> tuple[str, ReplyStats]:
        """The whole reply at once (streamed underneath, so the stats are measured the same way)."""
        reply = self.stream_chat(messages, params, model=model)
        for _ in reply:
            pass
        assert reply.stats is not None
        return reply.text, reply.stats

    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        params: ChatParams | None = None,
        *,
        model: str | None = None,
    ) -> str:
        """One short reply, not streamed (a title, a label): its text, or ``ChatError``."""
        params = params or ChatParams()
        chosen = model or self.default_model()
        answer = self._call(
            lambda: self._openai.chat.completions.create(
                model=chosen,
                messages=cast(Any, [dict(m) for m in messages]),
                stream=False,
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                top_p=params.top_p,
            )
        )
        choices = getattr(answer, "choices", None) or []
        content = choices[0].message.content if choices else None
        return content if isinstance(content, str) else ""

    def _call(self, fn: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            try:
                return fn()
            except openai.APIStatusError as exc:
                retryable = exc.status_code in (502, 503, 504)
                if not retryable or attempt >= self.retries:
                    kind = ServerNotReady if exc.status_code == 503 else ChatError
                    raise kind(_status_message(self.endpoint, exc)) from exc
                error: Exception = exc
            except (openai.APIConnectionError, httpx.HTTPError) as exc:
                if attempt >= self.retries:
                    raise EndpointUnreachable(unreachable_message(self.endpoint)) from exc
                error = exc
            delay = self.backoff_s * (2**attempt)
            log.info("retrying %s in %.1f s after %s", self.endpoint, delay, type(error).__name__)
            self._sleep(delay)
            attempt += 1


@dataclass
class SessionTotals:
    """Token usage summed over a chat session, for the /stats views."""

    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    def add(self, stats: ReplyStats) -> None:
        self.replies += 1
        self.prompt_tokens += stats.prompt_tokens or 0
        self.completion_tokens += stats.completion_tokens
        if stats.ttft_s is not None:
            self.ttfts.append(stats.ttft_s)
        if stats.tokens_per_s is not None:
            self.rates.append(stats.tokens_per_s)

    @property
    def mean_ttft_s(self) -> float | None:
        return sum(self.ttfts) / len(self.ttfts) if self.ttfts else None

    @property
    def mean_tokens_per_s(self) -> float | None:
        return sum(self.rates) / len(self.rates) if self.rates else None
