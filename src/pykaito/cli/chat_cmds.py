"""`kaito chat`, `kaito ui` and `kaito up`: the chat apps and the one-command local stack."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pykaito.apps.common import DEFAULT_SYSTEM_PROMPT
from pykaito.apps.connections import CONNECTION_ENV
from pykaito.apps.history import data_dir
from pykaito.cli.output import console, err_console
from pykaito.cli.signals import sigterm_as_interrupt
from pykaito.client.endpoint import API_KEY_ENV, DEFAULT_ENDPOINT, ENDPOINT_ENV, normalize_endpoint
from pykaito.errors import EngineError, InputError

UI_PORT = 8501
UI_LOG = "ui.log"
RUNTIME_LOG = "runtime.log"


def webapp_path() -> Path:
    """The Streamlit script shipped inside the package."""
    return Path(str(resources.files("pykaito.apps") / "webapp.py"))


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """Streamlit headless, without telemetry, first-run prompts or a file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(webapp_path()),
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.showEmailPrompt=false",
        "--global.developmentMode=false",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--client.toolbarMode=minimal",
        f"--server.address={host}",
        f"--server.port={port}",
    ]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def require_free_port(port: int, flag: str, make_var: str | None = None) -> None:
    if not port_is_free(port):
        how = f"{flag} {port + 1}" + (f" (make run {make_var}={port + 1})" if make_var else "")
        raise InputError(f"port {port} is already in use: stop what runs there or pick another with {how}")


def kaito_command() -> str:
    """``kaito`` when that is what the shell finds, else the full path (the virtualenv is not active)."""
    here = Path(sys.executable).parent / "kaito"
    if not here.exists():
        return "kaito"
    found = shutil.which("kaito")
    return "kaito" if found and Path(found).resolve() == here.resolve() else str(here)


class WebApp:
    """The Streamlit web app as a child process, its output in ``ui.log`` in the data directory."""

    def __init__(
        self, endpoint: str, port: int, host: str = "127.0.0.1", connection: str | None = None
    ) -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = data_dir() / UI_LOG
        env = {
            **os.environ,
            ENDPOINT_ENV: endpoint,
            **({CONNECTION_ENV: connection} if connection else {}),
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
            "STREAMLIT_SERVER_HEADLESS": "true",
        }
        try:
            self._log = self.log_path.open("w", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write the web app's log {self.log_path}: {exc.strerror}") from exc
        try:
            self.process = subprocess.Popen(
                streamlit_command(port, host),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        except OSError as exc:
            self._log.close()
            raise EngineError(
                f"cannot start the web app ({' '.join(streamlit_command(port, host)[:3])}): {exc}"
            ) from exc

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"the web app exited at start: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise EngineError(
            f"the web app did not answer at {self.url} within {timeout_s:.0f} s: see {self.log_path}"
        )

    def log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or f"no output (see {self.log_path})"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class RuntimeHandle:
    """The local inference server with llama.cpp, running in this process on a background thread."""

    def __init__(
        self, model: Path | None, port: int, name: str = "", parallel: int = 8, ctx_size: int = 0
    ) -> None:
        from pykaito.runtime.serve import start_embedded

        self._handle = start_embedded(
            model=model,
            host="127.0.0.1",
            port=port,
            timeout=600.0,
            served_model_name=name,
            parallel=parallel,
            ctx_size=ctx_size,
        )
        self.url = self._handle.url

    def model_id(self) -> str:
        """The id clients pass as ``model``, as /v1/models lists it."""
        from pykaito.client.chat import ChatClient

        with ChatClient(self.url, retries=0) as client:
            return client.default_model()

    def problem(self) -> str | None:
        if self._handle.thread.is_alive():
            return None
        return "the inference server stopped: run `kaito up` again, or `kaito serve` to see its log"

    def stop(self) -> None:
        self._handle.stop(timeout=15.0)


def start_runtime(
    model: Path | None, port: int, name: str = "", parallel: int = 8, ctx_size: int = 0
) -> RuntimeHandle:
    """Load the model and start serving; blocks until /health is ready, with a spinner and a clock."""
    label = name or (model.name if model is not None else "SmolLM2-135M-Instruct (embedded)")
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(f"loading {label}…", total=None)
        return RuntimeHandle(model, port, name, parallel, ctx_size)


def wait_forever(runtime: RuntimeHandle | None, ui: WebApp | None) -> None:
    while True:
        if ui is not None and ui.process.poll() is not None:
            raise EngineError(f"the web app stopped: {ui.log_tail()}")
        if runtime is not None:
            problem = runtime.problem()
            if problem:
                raise EngineError(problem)
        time.sleep(0.5)


def read_api_key(path: Path | None) -> str | None:
    """The key in a file (its first line); None without a file, so $KAITO_API_KEY applies."""
    if path is None:
        return None
    try:
        key = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise InputError(
            f"--api-key-file {path}: {exc.strerror or exc}; give a file holding the key"
        ) from exc
    if not key or not key[0].strip():
        raise InputError(f"--api-key-file {path} is empty: put the server's API key on its first line")
    return key[0].strip()


def chat_command(
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", envvar=ENDPOINT_ENV, help="The server's URL.")
    ] = DEFAULT_ENDPOINT,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model id; the server's first by default.")
    ] = None,
    system: Annotated[
        str,
        typer.Option("--system", "-s", help="System prompt ('none' for none); the web app's default."),
    ] = DEFAULT_SYSTEM_PROMPT,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Reply length limit.")] = 512,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling.")] = 1.0,
    resume: Annotated[
        str | None, typer.Option("--resume", "-r", help="Continue a saved conversation.")
    ] = None,
    pull: Annotated[
        bool, typer.Option("--pull", help="Pull --model first, then serve it here for this chat.")
    ] = False,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            help=f"A file holding the server's API key (else ${API_KEY_ENV}); never stored in the history.",
        ),
    ] = None,
    save: Annotated[
        bool, typer.Option("--save", help="Save a piped question and its reply in the history.")
    ] = False,
    connection: Annotated[
        str | None,
        typer.Option(
            "--connection", "-c", help="A saved connection (`kaito connections list`): its URL and key."
        ),
    ] = None,
) -> None:
    """Chat in the terminal; with piped input, print one reply and exit.

    `--model NAME` of a pulled model that the endpoint does not serve starts it here for the chat.
    """
    from pykaito.apps import terminal
    from pykaito.client.chat import ChatParams

    params = ChatParams(temperature=temperature, max_tokens=max_tokens, top_p=top_p)
    api_key = read_api_key(api_key_file)
    if connection is not None:
        from pykaito.apps.connections import ConnectionStore

        store = ConnectionStore()
        saved = store.get(connection)
        endpoint = saved.url
        api_key = api_key or store.api_key(saved)
    runtime = None
    if model is not None and (pull or not _serves(endpoint, model)):
        from pykaito.cli.models_cmds import runtime_args

        if pull or _is_local(model):
            path, name, parallel, ctx_size = runtime_args(model, pull)
            runtime = start_runtime(path, _free_port(), name, parallel, ctx_size)
            endpoint, model = runtime.url, runtime.model_id()
    try:
        code = terminal.run(
            endpoint,
            model=model,
            system=None if system.strip().lower() in ("", "none") else system,
            params=params,
            resume=resume,
            api_key=api_key,
            connection=connection,
            save=True if save else None,
        )
    finally:
        if runtime is not None:
            runtime.stop()
    raise typer.Exit(code)


def _serves(endpoint: str, model: str) -> bool:
    """Whether the endpoint answers and lists ``model`` (a quick look, one second at most)."""
    try:
        listed = httpx.get(normalize_endpoint(endpoint) + "/v1/models", timeout=1.0).json()
        return any(entry.get("id") == model for entry in listed.get("data", []))
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _is_local(model: str) -> bool:
    from pykaito.models import ModelStore

    return ModelStore().find(model) is not None or Path(model).expanduser().is_file()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ui_command(
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", envvar=ENDPOINT_ENV, help="The server's URL.")
    ] = DEFAULT_ENDPOINT,
    port: Annotated[int, typer.Option("--port", "-p", help="Port of the web app.")] = UI_PORT,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    connection: Annotated[
        str | None,
        typer.Option("--connection", "-c", help="Open with a saved connection (`kaito connections list`)."),
    ] = None,
) -> None:
    """Open the web chat (Streamlit) against an endpoint."""
    if connection is not None:
        from pykaito.apps.connections import ConnectionStore

        endpoint = ConnectionStore().get(connection).url
    require_free_port(port, "--port")
    ui = WebApp(normalize_endpoint(endpoint), port, host, connection=connection)
    with sigterm_as_interrupt():
        try:
            with console.status("starting the web app…"):
                ui.wait_ready()
            console.print(f"web app: [bold]{ui.url}[/] (chatting with {normalize_endpoint(endpoint)})")
            console.print("press Ctrl-C to stop", style="dim")
            wait_forever(None, ui)
        except KeyboardInterrupt:
            pass
        finally:
            ui.stop()
    console.print("stopped", style="dim")


def up_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A pulled model (kaito models) or a GGUF file; the embedded SmolLM2-135M by default.",
        ),
    ] = None,
    pull: Annotated[bool, typer.Option("--pull", help="Pull --model first if it is not pulled yet.")] = False,
    port: Annotated[int, typer.Option("--port", "-p", help="Port of the OpenAI-compatible API.")] = 8080,
    ui_port: Annotated[int, typer.Option("--ui-port", help="Port of the web app.")] = UI_PORT,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only.")] = False,
) -> None:
    """Run a model locally and open the web chat: the whole stack in one command."""
    from pykaito.cli.models_cmds import runtime_args

    path, name, parallel, ctx_size = runtime_args(model, pull)
    require_free_port(port, "--port", "PORT")
    if not no_ui:
        require_free_port(ui_port, "--ui-port", "UI_PORT")
    log_path = data_dir() / RUNTIME_LOG
    logging.basicConfig(
        filename=log_path,
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    runtime: RuntimeHandle | None = None
    ui: WebApp | None = None
    with sigterm_as_interrupt():
        try:
            runtime = start_runtime(path, port, name, parallel, ctx_size)
            if not no_ui:
                with console.status("starting the web app…"):
                    ui = WebApp(runtime.url, ui_port)
                    ui.wait_ready()
            lines = [
                f"API       [bold]{runtime.url}/v1[/]  OpenAI-compatible, model {runtime.model_id()}",
            ]
            if ui is not None:
                lines.append(f"Web app   [bold]{ui.url}[/]")
            lines.append(f"Terminal  {kaito_command()} chat --endpoint {runtime.url}")
            lines.append(f"Log       {log_path}")
            console.rule("pykaito is up", align="left")
            for line in lines:  # soft wrap: a long path never breaks a line the user copies
                console.print(line, soft_wrap=True, highlight=False)
            console.print("press Ctrl-C to stop", style="dim")
            wait_forever(runtime, ui)
        except KeyboardInterrupt:
            err_console.print("stopping…", style="dim")
        finally:
            if ui is not None:
                ui.stop()
            if runtime is not None:
                runtime.stop()
    console.print("stopped", style="dim")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    from pykaito.cli import connections_cmds

    app.command("chat")(chat_command)
    connections_cmds.register(app)
    app.command("ui")(ui_command)
    app.command("up")(up_command)
