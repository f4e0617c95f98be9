"""The FastAPI application: thin routes over ``OpenAIServing``, one error renderer, auth and body limits.

``create_app(engine, settings)`` builds a self-contained app: its own metrics registry, its own
engine, no module globals. By default the app loads the engine in the background when it
starts (``/health`` answers 503 with the reason until the model is ready) and stops it on
shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import pykaito
from pykaito.errors import EngineError, PromptTooLongError, QueueFullError
from pykaito.runtime.engine import Engine
from pykaito.runtime.metrics import CONTENT_TYPE, ServerMetrics
from pykaito.runtime.middleware import BodyLimitMiddleware, QueueAndAuthMiddleware
from pykaito.runtime.protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ErrorType,
    TokenizeRequest,
)
from pykaito.runtime.serving import OpenAIServing
from pykaito.runtime.settings import ServerSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=pydantic.BaseModel)
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
    if loc and loc[0] == "body":
        loc = loc[1:]
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


async def parse_body(request: Request, model: type[M]) -> M:
    """Read a JSON body into ``model``; every way it can be wrong is a 400."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None


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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(QueueAndAuthMiddleware, api_key=settings.api_key, max_waiting=None)

    async def handle_error(_: Request, exc: Exception) -> Response:
        error = to_api_error(exc)
        if error.status >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return error_response(error)

    for exc_class in (ApiError, EngineError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_class, handle_error)

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        if serving.load_error is not None:
            reason = f"the model failed to load: {serving.load_error}"
            return JSONResponse({"status": "failed", "reason": reason}, status_code=503)
        state = engine.health()
        if state.ready:
            return JSONResponse({"status": "ok"})
        reason = state.reason or "loading the model"
        return JSONResponse({"status": "loading", "reason": reason}, status_code=503)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": pykaito.__version__}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(serving.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> Response:
        return serving.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest)
        return await serving.chat(body, request.receive)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await parse_body(request, CompletionRequest)
        return await serving.completion(body, request.receive)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        return serving.tokenize(await parse_body(request, TokenizeRequest))

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        return serving.detokenize(await parse_body(request, DetokenizeRequest))

    return app
