"""`kaito chat`, `kaito ui` and `kaito up`: the chat apps and the one-command local stack."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pykaito.apps.history import data_dir
from pykaito.cli.output import console, err_console
from pykaito.cli.signals import sigterm_as_interrupt
from pykaito.client.endpoint import DEFAULT_ENDPOINT, ENDPOINT_ENV, normalize_endpoint
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


def require_free_port(port: int, flag: str) -> None:
    if not port_is_free(port):
        raise InputError(f"port {port} is already in use: stop what runs there or pick another with {flag}")


class WebApp:
    """The Streamlit web app as a child process, its output in ``ui.log`` in the data directory."""

    def __init__(self, endpoint: str, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = data_dir() / UI_LOG
        env = {
            **os.environ,
            ENDPOINT_ENV: endpoint,
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
            "STREAMLIT_SERVER_HEADLESS": "true",
        }
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            streamlit_command(port, host),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )

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

    def __init__(self, model: Path | None, port: int) -> None:
        from pykaito.runtime.serve import start_embedded

        self._handle = start_embedded(model=model, host="127.0.0.1", port=port, timeout=600.0)
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


def start_runtime(model: Path | None, port: int) -> RuntimeHandle:
    """Load the model and start serving; blocks until /health is ready, with a spinner and a clock."""
    label = model.name if model is not None else "SmolLM2-135M-Instruct (embedded)"
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(f"loading {label}…", total=None)
        return RuntimeHandle(model, port)


def wait_forever(runtime: RuntimeHandle | None, ui: WebApp | None) -> None:
    while True:
        if ui is not None and ui.process.poll() is not None:
            raise EngineError(f"the web app stopped: {ui.log_tail()}")
        if runtime is not None:
            problem = runtime.problem()
            if problem:
                raise EngineError(problem)
        time.sleep(0.5)


def chat_command(
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", envvar=ENDPOINT_ENV, help="The server's URL.")
    ] = DEFAULT_ENDPOINT,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model id; the server's first by default.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Reply length limit.")] = 512,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling.")] = 1.0,
    resume: Annotated[
        str | None, typer.Option("--resume", "-r", help="Continue a saved conversation.")
    ] = None,
) -> None:
    """Chat in the terminal; with piped input, print one reply and exit."""
    from pykaito.apps import terminal
    from pykaito.client.chat import ChatParams

    params = ChatParams(temperature=temperature, max_tokens=max_tokens, top_p=top_p)
    code = terminal.run(endpoint, model=model, system=system, params=params, resume=resume)
    raise typer.Exit(code)


def ui_command(
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", envvar=ENDPOINT_ENV, help="The server's URL.")
    ] = DEFAULT_ENDPOINT,
    port: Annotated[int, typer.Option("--port", "-p", help="Port of the web app.")] = UI_PORT,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Open the web chat (Streamlit) against an endpoint."""
    require_free_port(port, "--port")
    ui = WebApp(normalize_endpoint(endpoint), port, host)
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
        Path | None, typer.Option("--model", "-m", help="A GGUF file; the embedded SmolLM2-135M by default.")
    ] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port of the OpenAI-compatible API.")] = 8080,
    ui_port: Annotated[int, typer.Option("--ui-port", help="Port of the web app.")] = UI_PORT,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only.")] = False,
) -> None:
    """Run a model locally and open the web chat: the whole stack in one command."""
    if model is not None and not model.is_file():
        raise InputError(f"--model {model}: no such file; give the path of a .gguf model")
    require_free_port(port, "--port")
    if not no_ui:
        require_free_port(ui_port, "--ui-port")
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
            runtime = start_runtime(model, port)
            if not no_ui:
                with console.status("starting the web app…"):
                    ui = WebApp(runtime.url, ui_port)
                    ui.wait_ready()
            lines = [
                f"API       [bold]{runtime.url}/v1[/]  OpenAI-compatible, model {runtime.model_id()}",
            ]
            if ui is not None:
                lines.append(f"Web app   [bold]{ui.url}[/]")
            lines.append(f"Terminal  kaito chat --endpoint {runtime.url}")
            lines.append(f"Log       {log_path}")
            console.print(Panel("\n".join(lines), title="pykaito is up", expand=False))
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
    app.command("chat")(chat_command)
    app.command("ui")(ui_command)
    app.command("up")(up_command)
