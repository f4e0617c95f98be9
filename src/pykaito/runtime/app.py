"""The FastAPI application: thin routes over ``OpenAIServing``, one error renderer, auth and body limits.

``create_app(engine, settings)`` builds a self-contained app: its own metrics registry, its own
engine, no module globals. By default the app loads the engine in the background when it
starts (``/health`` answers 503 with the reason until the model is ready) and stops it on
shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

import pykaito
from pykaito.errors import EngineError, PromptTooLongError, QueueFullError
from pykaito.runtime.engine import Engine
from pykaito.runtime.metrics import CONTENT_TYPE, ServerMetrics
from pykaito.runtime.middleware import BodyLimitMiddleware, JsonBodyMiddleware, QueueAndAuthMiddleware
from pykaito.runtime.protocol import (
    ApiError,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    ErrorType,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    VersionInfo,
)
from pykaito.runtime.serving import OpenAIServing
from pykaito.runtime.settings import ServerSettings

log = logging.getLogger(__name__)

LoadCallback = Callable[[BaseException | None], None]

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def _param(loc: tuple[int | str, ...]) -> str | None:
    """``("messages", 0, "content", "str")`` -> ``messages[0].content``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part not in ("str", "int", "float", "bool", "list", "dict", "none"):
            out += f".{part}" if out else part
        else:
            break
    return out or None


def validation_error(exc: pydantic.ValidationError | RequestValidationError) -> ApiError:
    """The first problem of a validation failure as a 400 naming its parameter."""
    problems = exc.errors()
    if not problems:
        return ApiError(400, "the request is not valid")
    first = problems[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"the request body is not valid JSON: {reason}".rstrip(": "))
    if loc and loc[0] == "body":
        loc = loc[1:]
        if not loc and first.get("type") == "missing":
            return ApiError(400, "the request body is missing: send a JSON object")
        if not loc and first.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            return ApiError(400, "the request body must be a JSON object")
    param = _param(loc)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if len(problems) > 1 and first.get("type") != "value_error":
        # A value that matches none of a union's shapes: say so once.
        message = f"{message} (and {len(problems) - 1} more problem(s))"
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


def to_api_error(exc: BaseException) -> ApiError:
    """Map any exception to the OpenAI-shaped error it is answered with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, QueueFullError):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return ApiError(
            429, str(exc), type_="rate_limit_error", code="queue_full", headers={"retry-after": retry}
        )
    if isinstance(exc, EngineError):
        return ApiError(500, f"the engine failed: {exc}", type_="server_error")
    if isinstance(exc, (RequestValidationError, pydantic.ValidationError)):
        return validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        type_: ErrorType = _TYPE_BY_STATUS.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        return ApiError(status, str(exc.detail), type_=type_, headers=dict(exc.headers or {}))
    return ApiError(500, "internal server error: see the server log", type_="server_error")


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.payload(), status_code=error.status, headers=error.headers)


_ERROR_MEANINGS = {
    400: "the request is not valid; the message names the parameter",
    401: "the API key is missing or wrong",
    404: "the model does not exist on this server",
    408: "the request body did not arrive in time",
    413: "the request body is over the server's limit",
    415: "the request body is not sent as application/json",
    429: "the waiting queue is full; retry after the Retry-After header's seconds",
    500: "the server failed",
    503: "the model is not loaded yet",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of error answers, all with the OpenAI error body."""
    return {s: {"model": ErrorResponse, "description": _ERROR_MEANINGS[s]} for s in statuses}


def _generation_responses(chunk: type[pydantic.BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A JSON body, or with ``stream: true`` server-sent events each holding one ``chunk``."""
    ok: dict[str, Any] = {
        "description": "the reply; with stream: true, server-sent events, one chunk each, then [DONE]",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "x-event-data": {"$ref": f"#/components/schemas/{chunk.__name__}"},
            }
        },
    }
    return {200: ok, **_errors(400, 401, 404, 408, 413, 415, 429, 500, 503)}


def _with_stream_chunks(app: FastAPI) -> None:
    """Add the streamed chunk models, which no route returns as JSON, to the document's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        _, top = models_json_schema(
            [(ChatCompletionChunk, "serialization"), (Completion, "serialization")],
            ref_template="#/components/schemas/{model}",
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in top.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    engine: Engine,
    settings: ServerSettings,
    *,
    manage_engine: bool = True,
    on_loaded: LoadCallback | None = None,
) -> FastAPI:
    """The OpenAI-compatible server for ``engine``.

    ``manage_engine``: start the engine in the background at startup and stop it at shutdown.
    ``on_loaded``: called once loading ends, with ``None`` or the exception that stopped it.
    """
    serving = OpenAIServing(engine, settings, ServerMetrics(
        settings.served_model_name or engine.model_name, engine.stats
    ))  # fmt: skip

    async def load() -> None:
        started = time.perf_counter()
        try:
            await engine.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            serving.load_error = exc
            log.error("loading %s failed: %s", serving.served_name, exc)
            if on_loaded is not None:
                on_loaded(exc)
            return
        log.info("%s is ready (%.1f s)", serving.served_name, time.perf_counter() - started)
        if on_loaded is not None:
            on_loaded(None)

    loops: list[asyncio.AbstractEventLoop] = []

    def begin_shutdown() -> None:
        """End the replies in flight with finish reason "abort"; safe from any thread or a signal handler."""
        for loop in loops:
            if not loop.is_closed():
                loop.call_soon_threadsafe(serving.abort_all)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loops.append(asyncio.get_running_loop())
        task = asyncio.create_task(load()) if manage_engine else None
        try:
            yield
        finally:
            if task is not None:
                if not task.done():
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await engine.stop()

    app = FastAPI(
        title="pykaito inference server",
        version=pykaito.__version__,
        description="An OpenAI-compatible API over a self-hosted model.",
        lifespan=lifespan,
    )
    app.state.begin_shutdown = begin_shutdown
    # outermost last: the key is checked first, then the content type, then the body's size and pace
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(QueueAndAuthMiddleware, api_key=settings.api_key, max_waiting=None)

    async def handle_error(_: Request, exc: Exception) -> Response:
        error = to_api_error(exc)
        if error.status == 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return error_response(error)

    for exc_class in (ApiError, EngineError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_class, handle_error)

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    async def health() -> Response:
        if serving.load_error is not None:
            reason = f"the model failed to load: {serving.load_error}"
            return JSONResponse({"status": "failed", "reason": reason}, status_code=503)
        state = engine.health()
        if state.ready:
            return JSONResponse({"status": "ok"})
        reason = state.reason or "loading the model"
        return JSONResponse({"status": "loading", "reason": reason}, status_code=503)

    @app.get("/version", response_model=VersionInfo)
    async def version() -> Response:
        return serving.version()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(serving.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", response_model=ModelList, responses=_errors(401))
    async def models() -> Response:
        return serving.models()

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses=_generation_responses(ChatCompletionChunk),
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await serving.chat(body, request.receive)

    @app.post("/v1/completions", response_model=Completion, responses=_generation_responses(Completion))
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serving.completion(body, request.receive)

    @app.post("/tokenize", response_model=TokenizeResponse, responses=_errors(400, 401, 404, 415, 503))
    async def tokenize(body: TokenizeRequest) -> Response:
        return await serving.tokenize(body)

    @app.post("/detokenize", response_model=DetokenizeResponse, responses=_errors(400, 401, 404, 415, 503))
    async def detokenize(body: DetokenizeRequest) -> Response:
        return await serving.detokenize(body)

    _with_stream_chunks(app)
    return app
