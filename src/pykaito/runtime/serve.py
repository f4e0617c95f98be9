"""Running the server: in the foreground with signal handling, or in a background thread.

``serve`` is what ``kaito serve`` and ``pykaito-runtime llamacpp`` call: it binds the port first
(so a port in use is one clear error, not a traceback), loads the model while ``/health``
answers 503, and stops on SIGINT or SIGTERM: streams in flight end at once with finish reason
"abort" and ``data: [DONE]``, then the process exits as uvicorn does, re-raising the signal
(status 143 for SIGTERM, 130 for Ctrl-C).

``start_in_thread`` runs the same server on a thread and returns a ``ServerHandle`` with its
URL and ``stop()``: what tests and the local ``kaito up`` use.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from pykaito.errors import EngineError, InputError, PykaitoError
from pykaito.runtime.app import create_app
from pykaito.runtime.connections import guarded_h11
from pykaito.runtime.engine import Engine
from pykaito.runtime.settings import ServerSettings

if TYPE_CHECKING:
    from pykaito.runtime.engines.llamacpp import LlamaCppEngine

log = logging.getLogger(__name__)

# The decode thread takes the GIL back after every llama.cpp call it makes; with Python's default
# 5 ms switch interval it can wait that long behind the event loop streaming the previous step's
# tokens. A short interval keeps decode steps back to back on a machine with few cores.
SWITCH_INTERVAL_S = 0.0005


def favour_decode_thread() -> None:
    """Shorten the interpreter's thread switch interval: only for a process that is the server.

    The setting is process-wide; ``serve`` (``kaito serve``, ``pykaito-runtime``) calls it, a
    server started on a thread inside another program (``start_in_thread``) does not.
    """
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a port in use is an ``InputError`` that says what to do."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot listen on host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {host} is already in use: stop the program using it or pass another --port"
            ) from exc
        if exc.errno == errno.EACCES:
            raise InputError(
                f"no permission to listen on port {port} on {host}: use a port above 1023"
            ) from exc
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def llamacpp_engine(
    model: Path,
    *,
    served_model_name: str = "",
    max_queue: int = 64,
    parallel: int = 8,
    threads: int = 0,
    ctx_size: int = 0,
    prefix_cache: bool = True,
    chat_template_file: Path | None = None,
    speculative: str = "ngram",
) -> LlamaCppEngine:
    """The llama.cpp engine for a GGUF file, with the flags of ``kaito serve`` and ``pykaito-runtime``.

    With no ``served_model_name`` the embedded GGUF is served under its preset name
    (``smollm2-135m-instruct``) and any other file under its file name.
    """
    if not model.is_file():
        what = "is a directory" if model.is_dir() else "does not exist"
        raise InputError(f"model file {model} {what}: pass the path of a .gguf file with --model")
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, got {parallel}")
    if max_queue < 0:
        raise InputError(f"--max-queue must be 0 or more, got {max_queue}")
    if threads < 0 or ctx_size < 0:
        raise InputError("--threads and --ctx-size must be 0 (automatic) or more")
    if speculative not in ("off", "ngram"):
        raise InputError(f"--speculative must be off or ngram, got {speculative!r}")
    chat_template = ""
    if chat_template_file is not None:
        try:
            chat_template = chat_template_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the chat template {chat_template_file}: {exc}") from exc
    from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
    from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings

    if not served_model_name and _is_embedded(model, embedded_gguf_path):
        served_model_name = EMBEDDED_PRESET
    return LlamaCppEngine(
        LlamaCppSettings(
            model_path=model,
            n_ctx=ctx_size,
            max_running=parallel,
            max_waiting=max_queue,
            threads=threads,
            served_model_name=served_model_name,
            prefix_cache=prefix_cache,
            chat_template=chat_template,
            speculative=speculative,
        )
    )


def _is_embedded(model: Path, locate: Callable[[], Path]) -> bool:
    try:
        return model.resolve() == locate().resolve()
    except PykaitoError:  # the embedded model package is not installed
        return False


class _Server(uvicorn.Server):
    """uvicorn's server that, when told to stop, ends the streams in flight at once.

    Without this a stream runs on until uvicorn's graceful timeout and is then cancelled with a
    traceback; with it every reply ends with finish reason "abort" and ``data: [DONE]``.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._begin_shutdown: Callable[[], None] = app.state.begin_shutdown

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._begin_shutdown()

    def stop(self) -> None:
        """Stop from another thread, as a signal would."""
        self.should_exit = True
        self._begin_shutdown()


def _config(app: FastAPI, settings: ServerSettings, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        lifespan="on",
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.graceful_shutdown_s)),
        server_header=False,
        http=guarded_h11(settings.header_timeout_s),
        limit_concurrency=settings.max_connections,
    )


def serve(
    engine: Engine, settings: ServerSettings, *, say: Callable[[str], None] = print, source: str = ""
) -> None:
    """Serve until SIGINT or SIGTERM; raise ``EngineError`` if the model cannot be loaded.

    ``say`` prints progress lines; ``source`` (where the model comes from) goes in the first.
    """
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    favour_decode_thread()
    say(
        f"loading {settings.served_model_name or engine.model_name}"
        + (f" from {source}" if source else "")
        + " ..."
    )
    url = url_for(settings.host, port)
    failure: list[BaseException] = []
    server: _Server | None = None

    def loaded(exc: BaseException | None) -> None:
        if exc is None:
            say(f"ready: {url}/v1 serves {settings.served_model_name or engine.model_name}")
            return
        failure.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(engine, settings, on_loaded=loaded)
    server = _Server(_config(app, settings, port), app)
    say(f"listening on {url} (GET /health answers 200 once the model is loaded)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        raise EngineError(f"the server stopped: {failure[0]}") from failure[0]


@dataclass
class ServerHandle:
    """A server running on a background thread."""

    url: str
    host: str
    port: int
    server: _Server
    thread: threading.Thread
    _sock: socket.socket = field(repr=False)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return self.url + "/v1"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop: streams in flight end with finish reason "abort"; wait for the thread to end."""
        self.server.stop()
        self.thread.join(timeout)
        self._sock.close()
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5.0)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_in_thread(
    engine: Engine,
    settings: ServerSettings | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 120.0,
) -> ServerHandle:
    """Start the server on a thread (port 0 picks a free port) and return once it listens.

    With ``wait_ready`` it also waits until the model is loaded, and raises ``EngineError``
    (after stopping the server) if loading fails.
    """
    settings = settings or ServerSettings(port=0)
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    loaded = threading.Event()
    failure: list[BaseException] = []

    def on_loaded(exc: BaseException | None) -> None:
        if exc is not None:
            failure.append(exc)
        loaded.set()

    app = create_app(engine, settings, on_loaded=on_loaded)
    server = _Server(_config(app, settings, port), app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"pykaito-server-{port}", daemon=True
    )
    handle = ServerHandle(url_for(settings.host, port), settings.host, port, server, thread, sock)
    thread.start()
    try:
        _wait_started(handle, loaded, failure, wait_ready, timeout)
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C or SIGTERM (``kaito up`` turns it into KeyboardInterrupt) while the model loads:
        # stop the server as when it runs, so a request answered 503 is not cut off mid-answer.
        handle.stop()
        raise
    return handle


def _wait_started(
    handle: ServerHandle,
    loaded: threading.Event,
    failure: list[BaseException],
    wait_ready: bool,
    timeout: float,
) -> None:
    server, thread, sock, port = handle.server, handle.thread, handle._sock, handle.port
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise EngineError(f"the server on port {port} stopped while starting: see the log")
        if time.monotonic() > deadline:
            handle.stop()
            raise EngineError(f"the server on port {port} did not start within {timeout:.0f} s")
        time.sleep(0.005)
    if wait_ready:
        if not loaded.wait(max(0.0, deadline - time.monotonic())):
            handle.stop()
            raise EngineError(f"the model did not load within {timeout:.0f} s")
        if failure:
            handle.stop()
            raise EngineError(f"the model failed to load: {failure[0]}") from failure[0]


def start_embedded(
    *,
    model: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    parallel: int = 8,
    max_queue: int = 64,
    threads: int = 0,
    timeout: float = 120.0,
    served_model_name: str = "",
    ctx_size: int = 0,
) -> ServerHandle:
    """The embedded SmolLM2 model (or another GGUF) served on a thread, ready to answer: for ``kaito up``."""
    from pykaito.catalog.embedded import embedded_gguf_path

    path = model if model is not None else embedded_gguf_path()
    engine = llamacpp_engine(
        path,
        served_model_name=served_model_name,
        max_queue=max_queue,
        parallel=parallel,
        threads=threads,
        ctx_size=ctx_size,
    )
    settings = ServerSettings(host=host, port=port, api_key=api_key)
    return start_in_thread(engine, settings, timeout=timeout)
