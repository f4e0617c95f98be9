"""Serving the OpenAI API over an engine: requests in, engine requests out, responses and SSE chunks back.

``OpenAIServing`` holds the engine, the settings and the metrics; the routes in ``app.py`` are
thin calls into it. Each generation runs until it finishes or the client goes away; either way
the engine iterator is closed, which frees the sequence's slot and KV cache at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive

import pykaito
from pykaito.errors import EngineError, PromptTooLongError
from pykaito.runtime import grammar as grammars
from pykaito.runtime.engine import (
    ChatMessage,
    ChatTemplateError,
    Delta,
    Engine,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
)
from pykaito.runtime.metrics import RequestTimer, ServerMetrics
from pykaito.runtime.protocol import (
    ApiError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatLogprobs,
    ChatMessageIn,
    ChatMessageOut,
    ChoiceDelta,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    FinishReasonOut,
    FunctionCallOut,
    JsonObjectFormat,
    JsonSchemaFormat,
    ModelCard,
    ModelList,
    NamedToolChoice,
    PromptTokensDetails,
    ResponseFormat,
    SamplingDefaultsOut,
    TextFormat,
    TokenizeRequest,
    TokenizeResponse,
    TokenLogprobOut,
    ToolCallDelta,
    ToolCallOut,
    TopLogprob,
    Usage,
    VersionInfo,
    new_id,
    now,
)
from pykaito.runtime.settings import ServerSettings
from pykaito.runtime.streaming import (
    DONE,
    Disconnected,
    EventStreamResponse,
    close_iterator,
    sse,
    sse_chunk,
    until_disconnect,
)
from pykaito.runtime.tools import FunctionSpec, call_grammar, parse_calls

log = logging.getLogger(__name__)


def json_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


@dataclass
class _Result:
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None


@dataclass(eq=False)
class _Run:
    """One admitted generation: the engine stream with its first delta already in hand."""

    request_id: str
    kind: str
    iterator: AsyncIterator[Delta]
    first: Delta
    timer: RequestTimer
    finish_reason: FinishReason | None = None
    closed: bool = False
    aborting: bool = False
    _waiter: asyncio.Task[Any] | None = field(default=None, repr=False)
    registry: set[_Run] = field(default_factory=set, repr=False)  # the server's replies in flight

    def abort(self) -> None:
        """End the reply now with finish reason "abort" (the server is stopping); on the loop's thread."""
        self.aborting = True
        if self._waiter is not None:
            self._waiter.cancel("pykaito: server stopping")

    async def deltas(self) -> AsyncIterator[Delta]:
        delta = self.first
        while True:
            self.timer.tokens(len(delta.token_ids))
            if delta.finish_reason is not None:
                self.finish_reason = delta.finish_reason
            yield delta
            if delta.finish_reason is not None:
                return
            if self.aborting:
                break
            task = asyncio.current_task()
            self._waiter = task
            try:
                delta = await anext(self.iterator)
            except StopAsyncIteration:
                raise EngineError("the engine ended a stream without a finish reason") from None
            except asyncio.CancelledError:
                if not self.aborting or task is None:
                    raise
                task.uncancel()  # this cancellation only woke the reply up to end it
                break
            finally:
                self._waiter = None
        await close_iterator(self.iterator)
        self.finish_reason = "abort"
        yield Delta(text="", finish_reason="abort")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.registry.discard(self)
        await close_iterator(self.iterator)
        elapsed = self.timer.finish(self.finish_reason or "abort")
        ttft = self.timer.ttft
        log.info(
            "%s %s prompt=%d completion=%d finish=%s ttft=%s total=%.3fs",
            self.kind,
            self.request_id,
            self.timer.prompt_tokens,
            self.timer.generated,
            self.finish_reason or "abort",
            "-" if ttft is None else f"{ttft:.3f}s",
            elapsed,
        )

    def usage(self) -> Usage:
        prompt, completion = self.timer.prompt_tokens, self.timer.generated
        cached = self.timer.cached_tokens
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached) if cached else None,
        )


def _chat_logprobs(items: Sequence[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            TokenLogprobOut(
                token=lp.token,
                logprob=_finite(lp.logprob),
                bytes=list(lp.token.encode()),
                top_logprobs=[
                    TopLogprob(token=t, logprob=_finite(v), bytes=list(t.encode())) for t, v in lp.top
                ],
            )
            for lp in items
        ]
    )


def _completion_logprobs(items: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    out = CompletionLogprobs()
    for lp in items:
        out.tokens.append(lp.token)
        out.token_logprobs.append(_finite(lp.logprob))
        out.top_logprobs.append({t: _finite(v) for t, v in lp.top})
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


def _finite(value: float) -> float:
    """JSON has no -inf: clamp impossible tokens the way OpenAI-compatible servers do."""
    return value if math.isfinite(value) else -9999.0


class OpenAIServing:
    """The OpenAI endpoints over one engine."""

    def __init__(self, engine: Engine, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.served_name = settings.served_model_name or engine.model_name
        self.served_names = tuple(dict.fromkeys((self.served_name, *settings.served_model_aliases)))
        self.created = now()
        self.load_error: BaseException | None = None
        self.stopping = False
        self._runs: set[_Run] = set()

    def abort_all(self) -> None:
        """The server is stopping: every reply in flight, and any started later, ends with "abort"."""
        self.stopping = True
        for run in list(self._runs):
            run.abort()

    # ------------------------------------------------------------ checks

    def check_model(self, model: str | None) -> None:
        if model and model not in self.served_names:
            raise ApiError(
                404,
                f"the model {model!r} does not exist: this server serves {self.served_name!r}",
                type_="not_found_error",
                param="model",
                code="model_not_found",
            )

    def check_ready(self) -> None:
        if self.load_error is not None:
            raise ApiError(
                503, f"the model failed to load: {self.load_error}", type_="service_unavailable_error"
            )
        health = self.engine.health()
        if not health.ready:
            raise ApiError(
                503,
                f"the model is not ready yet ({health.reason or 'loading'}): retry shortly",
                type_="service_unavailable_error",
                code="model_loading",
                headers={"retry-after": "1"},
            )

    # ------------------------------------------------------------ prompts

    def chat_prompt(
        self,
        messages: Sequence[ChatMessageIn],
        *,
        add_special: bool = False,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Render and tokenize a conversation (CPU work: call it off the event loop)."""
        text = self.chat_text(messages, add_generation_prompt=add_generation_prompt, tools=tools)
        return self._tokenize(text, add_special=add_special, param="messages")

    def chat_text(
        self,
        messages: Sequence[ChatMessageIn],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text of a conversation, from the model's chat template.

        A template that refuses the conversation is the client's to fix (400); a template that
        fails, or a model without one, is the server's (the ``EngineError`` is answered with 500).
        """
        converted: list[ChatMessage] = []
        for i, message in enumerate(messages):
            try:
                text = message.text()
            except ValueError as exc:
                raise ApiError(400, str(exc), param=f"messages[{i}].content") from exc
            extra: dict[str, Any] = dict(message.model_extra or {})
            if message.name is not None:
                extra["name"] = message.name
            if message.tool_calls is not None:
                extra["tool_calls"] = [call.model_dump() for call in message.tool_calls]
            if message.tool_call_id is not None:
                extra["tool_call_id"] = message.tool_call_id
            converted.append(ChatMessage(role=message.role, content=text, extra=extra))
        try:
            return self.engine.render_chat(
                converted, add_generation_prompt=add_generation_prompt, tools=tools
            )
        except ChatTemplateError as exc:
            raise ApiError(400, str(exc), param="messages") from exc

    def _tokenize(self, text: str, *, add_special: bool, param: str) -> list[int]:
        try:
            return self.engine.tokenize(text, add_special=add_special)
        except (EngineError, ValueError) as exc:
            raise ApiError(400, f"the text cannot be tokenized: {exc}", param=param) from exc

    def completion_prompt(self, body: CompletionRequest) -> tuple[list[int], str]:
        prompt = body.single_prompt()
        if not prompt:
            raise ApiError(400, "the prompt is empty: send some text or at least one token", param="prompt")
        if isinstance(prompt, str):
            tokens = self._tokenize(prompt, add_special=True, param="prompt")
            text = prompt
        else:
            tokens = prompt
            text = self._detokenize(tokens, param="prompt")
        if not tokens:
            raise ApiError(400, "the prompt is empty: send some text or at least one token", param="prompt")
        return tokens, text

    def _detokenize(self, tokens: Sequence[int], *, param: str) -> str:
        self._check_token_ids(tokens, param)
        try:
            return self.engine.detokenize(tokens)
        except (EngineError, ValueError, IndexError) as exc:
            raise ApiError(400, f"the token ids cannot be decoded: {exc}", param=param) from exc

    def _check_token_ids(self, tokens: Sequence[int], param: str) -> None:
        """Refuse ids outside the vocabulary before they reach native code."""
        vocab = self.engine.vocab_size
        if vocab <= 0:  # not loaded yet: check_ready answers first
            return
        for i, token in enumerate(tokens):
            if not 0 <= token < vocab:
                raise ApiError(
                    400, f"token id {token} is outside the vocabulary (0..{vocab - 1})", param=f"{param}[{i}]"
                )

    def sampling(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        prompt_len: int,
        *,
        max_new: int | None,
        max_new_param: str,
        logprobs: int | None,
        grammar: str | None,
        prompt_param: str,
    ) -> SamplingParams:
        context = self.engine.max_model_len
        room = context - prompt_len
        if room <= 0:
            raise ApiError(
                400,
                f"this model's maximum context length is {context} tokens, and the prompt has "
                f"{prompt_len} tokens: shorten the {prompt_param}",
                param=prompt_param,
                code="context_length_exceeded",
            )
        if max_new is None:
            max_new = room
        elif max_new > room:
            raise ApiError(
                400,
                f"this model's maximum context length is {context} tokens; the prompt has {prompt_len} "
                f"tokens and {max_new_param} asks for {max_new} more: set {max_new_param} to at most {room}",
                param=max_new_param,
                code="context_length_exceeded",
            )
        defaults = self.engine.sampling_defaults  # for what the request leaves out
        top_k = defaults.top_k if body.top_k is None else max(0, body.top_k)  # -1: no top-k
        return SamplingParams(
            max_tokens=max_new,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            top_k=top_k,
            min_p=defaults.min_p if body.min_p is None else body.min_p,
            seed=body.seed,
            stop=body.stop_strings(),
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            repetition_penalty=body.repetition_penalty or 1.0,
            logprobs=logprobs,
            grammar=grammar,
            speculative=body.speculative is not False,
            ignore_eos=bool(body.ignore_eos) and grammar is None,  # structured output ends with its grammar
        )

    @staticmethod
    def grammar(response_format: ResponseFormat | None) -> str | None:
        if isinstance(response_format, JsonObjectFormat):
            return grammars.json_object_grammar()
        if isinstance(response_format, JsonSchemaFormat):
            try:
                return grammars.json_schema_grammar(response_format.json_schema.schema_)
            except grammars.GrammarError as exc:
                raise ApiError(400, str(exc), param="response_format.json_schema.schema") from exc
        return None

    # ------------------------------------------------------------ running

    async def _start(
        self,
        kind: str,
        request_id: str,
        prompt: list[int],
        params: SamplingParams,
        receive: Receive,
        prompt_param: str,
    ) -> _Run:
        arrival = time.perf_counter()
        try:
            iterator = self.engine.generate(GenerationRequest(request_id, prompt, params))
        except PromptTooLongError as exc:
            raise ApiError(400, str(exc), param=prompt_param, code="context_length_exceeded") from exc
        except ValueError as exc:  # the engine refused a parameter value
            raise ApiError(400, str(exc)) from exc
        try:
            first = await until_disconnect(anext(iterator), receive)
        except StopAsyncIteration:
            await close_iterator(iterator)
            raise EngineError("the engine ended a stream before its first token") from None
        except ValueError as exc:  # the engine refused a parameter when it admitted the request
            await close_iterator(iterator)
            raise ApiError(400, str(exc)) from exc
        except BaseException:
            await close_iterator(iterator)
            raise
        timer = RequestTimer(self.metrics, len(prompt), cached_tokens=first.cached_tokens, start=arrival)
        run = _Run(request_id, kind, iterator, first, timer, aborting=self.stopping, registry=self._runs)
        self._runs.add(run)
        return run

    async def _collect(self, run: _Run, receive: Receive) -> _Result:
        async def collect() -> _Result:
            result = _Result()
            async for delta in run.deltas():
                result.text.append(delta.text)
                result.logprobs.extend(delta.logprobs)
                result.finish_reason = delta.finish_reason
            return result

        try:
            return await until_disconnect(collect(), receive)
        finally:
            await run.close()

    # ------------------------------------------------------------ chat completions

    def check_tools(self, body: ChatCompletionRequest) -> None:
        if not body.wants_tools():
            return
        if not self.engine.supports_tools():
            raise ApiError(
                400,
                f"the model {self.served_name!r} cannot call tools: its chat template does not render "
                "tools, so the model was never shown them. Send the request without tools (or with "
                'tool_choice "none"), or serve a model whose chat template supports tools',
                param="tools",
                code="tools_not_supported",
            )
        if body.response_format is not None and not isinstance(body.response_format, TextFormat):
            raise ApiError(
                400,
                "response_format cannot be combined with tools: a tool call's arguments already follow "
                'the function\'s schema; send one or the other (or tool_choice "none")',
                param="response_format",
            )

    def _chat_inputs(self, body: ChatCompletionRequest) -> tuple[list[int], str | None]:
        """The prompt tokens and the grammar of a chat request: CPU work, run off the event loop."""
        if not (body.wants_tools() and body.tools):
            return self.chat_prompt(body.messages), self.grammar(body.response_format)
        offered = [tool.model_dump(exclude_none=True) for tool in body.tools]
        prompt = self.chat_prompt(body.messages, tools=offered)
        choice = body.tool_choice
        if choice != "required" and not isinstance(choice, NamedToolChoice):
            return prompt, None  # "auto": text or calls, read from the reply
        named = choice.function.name if isinstance(choice, NamedToolChoice) else None
        functions = [
            FunctionSpec(tool.function.name, tool.function.parameters or {})
            for tool in body.tools
            if named is None or tool.function.name == named
        ]
        try:
            return prompt, call_grammar(functions)
        except grammars.GrammarError as exc:
            raise ApiError(400, str(exc), param="tools") from exc

    @staticmethod
    def _tool_names(body: ChatCompletionRequest) -> list[str]:
        return [tool.function.name for tool in body.tools or ()] if body.wants_tools() else []

    @staticmethod
    def _reply(text: str, names: Sequence[str]) -> tuple[str | None, list[ToolCallOut] | None]:
        """The content and tool calls: calls only where tools were offered and the model made some."""
        if not names:
            return text, None
        content, calls = parse_calls(text, names)
        if not calls:
            return text, None
        out = [
            ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments)) for c in calls
        ]
        return content or None, out

    async def chat(self, body: ChatCompletionRequest, receive: Receive) -> Response:
        self.check_model(body.model)
        self.check_ready()
        self.check_tools(body)
        prompt, grammar = await anyio.to_thread.run_sync(self._chat_inputs, body)
        max_param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        params = self.sampling(
            body,
            len(prompt),
            max_new=body.max_new_tokens(),
            max_new_param=max_param,
            logprobs=body.logprobs_count(),
            grammar=grammar,
            prompt_param="messages",
        )
        request_id = new_id("chatcmpl")
        try:
            run = await self._start("chat", request_id, prompt, params, receive, "messages")
            if body.stream:
                return EventStreamResponse(self._chat_events(run, body), run.close)
            result = await self._collect(run, receive)
        except Disconnected:
            return Response(status_code=499)
        content, calls = self._reply("".join(result.text), self._tool_names(body))
        completion = ChatCompletion(
            id=request_id,
            created=now(),
            model=self.served_name,
            choices=[
                ChatChoice(
                    message=ChatMessageOut(content=content, tool_calls=calls),
                    logprobs=_chat_logprobs(result.logprobs) if body.logprobs else None,
                    finish_reason="tool_calls" if calls else result.finish_reason,
                )
            ],
            usage=run.usage(),
        )
        return json_response(completion)

    async def _chat_events(self, run: _Run, body: ChatCompletionRequest) -> AsyncGenerator[bytes, None]:
        created = now()

        def chunk(choice: ChatChunkChoice | None, usage: Usage | None = None) -> bytes:
            data = ChatCompletionChunk(
                id=run.request_id,
                created=created,
                model=self.served_name,
                choices=[] if choice is None else [choice],
                usage=usage,
            )
            return sse_chunk(data, null_usage=body.include_usage)

        names = self._tool_names(body)
        try:
            yield chunk(ChatChunkChoice(delta=ChoiceDelta(role="assistant", content="")))
            finish: FinishReasonOut | None = None
            held: list[str] = []  # with tools offered, the reply is read whole: a call is sent complete
            async for delta in run.deltas():
                finish = delta.finish_reason
                if names:
                    held.append(delta.text)
                elif delta.text or delta.logprobs:
                    logprobs = _chat_logprobs(delta.logprobs) if body.logprobs else None
                    yield chunk(ChatChunkChoice(delta=ChoiceDelta(content=delta.text), logprobs=logprobs))
            if names:
                content, calls = self._reply("".join(held), names)
                if content:
                    yield chunk(ChatChunkChoice(delta=ChoiceDelta(content=content)))
                if calls:
                    finish = "tool_calls"
                    deltas = [
                        ToolCallDelta(index=i, id=call.id, function=call.function)
                        for i, call in enumerate(calls)
                    ]
                    yield chunk(ChatChunkChoice(delta=ChoiceDelta(tool_calls=deltas)))
            yield chunk(ChatChunkChoice(delta=ChoiceDelta(), finish_reason=finish))
            if body.include_usage:
                yield chunk(None, run.usage())
            yield DONE
        except Exception as exc:
            yield self._stream_error(run, exc)
            yield DONE
        finally:
            await run.close()

    def _stream_error(self, run: _Run, exc: Exception) -> bytes:
        log.exception("stream %s failed", run.request_id)
        if isinstance(exc, ApiError):
            return sse(exc.payload())
        return sse(ApiError(500, f"generation failed: {exc}", type_="server_error").payload())

    # ------------------------------------------------------------ completions

    async def completion(self, body: CompletionRequest, receive: Receive) -> Response:
        self.check_model(body.model)
        self.check_ready()
        prompt, prompt_text = await anyio.to_thread.run_sync(self.completion_prompt, body)
        params = self.sampling(
            body,
            len(prompt),
            max_new=body.max_tokens,
            max_new_param="max_tokens",
            logprobs=body.logprobs,
            grammar=None,
            prompt_param="prompt",
        )
        request_id = new_id("cmpl")
        prefix = prompt_text if body.echo else ""
        try:
            run = await self._start("completion", request_id, prompt, params, receive, "prompt")
            if body.stream:
                return EventStreamResponse(self._completion_events(run, body, prefix), run.close)
            result = await self._collect(run, receive)
        except Disconnected:
            return Response(status_code=499)
        text = prefix + "".join(result.text)
        completion = Completion(
            id=request_id,
            created=now(),
            model=self.served_name,
            choices=[
                CompletionChoice(
                    text=text,
                    logprobs=None if body.logprobs is None else _completion_logprobs(result.logprobs, 0),
                    finish_reason=result.finish_reason,
                )
            ],
            usage=run.usage(),
        )
        return json_response(completion)

    async def _completion_events(
        self, run: _Run, body: CompletionRequest, prefix: str
    ) -> AsyncGenerator[bytes, None]:
        created = now()

        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
            data = Completion(
                id=run.request_id, created=created, model=self.served_name, choices=choices, usage=usage
            )
            return sse_chunk(data, null_usage=body.include_usage)

        try:
            offset = 0
            if prefix:
                yield chunk([CompletionChoice(text=prefix, finish_reason=None)])
                offset = len(prefix)
            async for delta in run.deltas():
                logprobs = None if body.logprobs is None else _completion_logprobs(delta.logprobs, offset)
                offset += len(delta.text)
                if delta.text or delta.logprobs or delta.finish_reason:
                    yield chunk(
                        [
                            CompletionChoice(
                                text=delta.text, logprobs=logprobs, finish_reason=delta.finish_reason
                            )
                        ]
                    )
            if body.include_usage:
                yield chunk([], run.usage())
            yield DONE
        except Exception as exc:
            yield self._stream_error(run, exc)
            yield DONE
        finally:
            await run.close()

    # ------------------------------------------------------------ models, tokenizer

    def models(self) -> Response:
        cards = [
            ModelCard(
                id=name,
                created=self.created,
                root=self.engine.model_name,
                max_model_len=self.engine.max_model_len,
            )
            for name in self.served_names
        ]
        return json_response(ModelList(data=cards))

    def version(self) -> Response:
        defaults = self.engine.sampling_defaults
        return json_response(
            VersionInfo(
                version=pykaito.__version__,
                sampling_defaults=SamplingDefaultsOut(
                    temperature=defaults.temperature,
                    top_p=defaults.top_p,
                    top_k=defaults.top_k,
                    min_p=defaults.min_p,
                    source=defaults.source,
                ),
            )
        )

    async def tokenize(self, body: TokenizeRequest) -> Response:
        self.check_model(body.model)
        self.check_ready()
        tokens = await anyio.to_thread.run_sync(self._tokenize_body, body)
        return json_response(
            TokenizeResponse(count=len(tokens), max_model_len=self.engine.max_model_len, tokens=tokens)
        )

    def _tokenize_body(self, body: TokenizeRequest) -> list[int]:
        if body.messages is not None:
            return self.chat_prompt(
                body.messages,
                add_special=bool(body.add_special_tokens),
                add_generation_prompt=body.add_generation_prompt,
            )
        add_special = True if body.add_special_tokens is None else body.add_special_tokens
        return self._tokenize(body.prompt or "", add_special=add_special, param="prompt")

    async def detokenize(self, body: DetokenizeRequest) -> Response:
        self.check_model(body.model)
        self.check_ready()
        text = await anyio.to_thread.run_sync(
            functools.partial(self._detokenize, body.tokens, param="tokens")
        )
        return json_response(DetokenizeResponse(prompt=text))
