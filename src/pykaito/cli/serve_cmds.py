"""``kaito serve``: an OpenAI-compatible server on this machine, with the llama.cpp engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pykaito.cli.output import err_console
from pykaito.runtime.settings import LOCAL_PORT


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(serve)


def serve(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="A .gguf file to serve (default: the embedded SmolLM2-135M-Instruct)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 to accept other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = LOCAL_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="KAITO_API_KEY",
            help="Require this key (Authorization: Bearer) on the API.",
            show_envvar=True,
        ),
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model id clients send (default: the preset or file name).")
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Requests that may wait for a slot; more get HTTP 429.")
    ] = 64,
    parallel: Annotated[int, typer.Option(help="Requests decoded together (continuous batching).")] = 8,
    threads: Annotated[int, typer.Option(help="CPU threads; 0 uses the physical cores (at most 8).")] = 0,
    ctx_size: Annotated[
        int, typer.Option(help="KV-cache tokens shared by all parallel requests; 0 gives 2048 per request.")
    ] = 0,
    prefix_cache: Annotated[
        bool,
        typer.Option(
            "--prefix-cache/--no-prefix-cache",
            help="Reuse a finished request's KV cache for a prompt that starts the same way.",
        ),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Serve a model with an OpenAI-compatible API (chat, completions, streaming, /metrics).

    With no options it serves smollm2-135m-instruct, shipped with pykaito, on http://127.0.0.1:8080/v1.
    """
    from pykaito.catalog.embedded import embedded_gguf_path
    from pykaito.runtime.serve import llamacpp_engine
    from pykaito.runtime.serve import serve as run_server
    from pykaito.runtime.settings import ServerSettings

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = embedded_gguf_path() if model is None else model.expanduser()
    engine = llamacpp_engine(
        path,
        served_model_name=served_model_name or "",
        max_queue=max_queue,
        parallel=parallel,
        threads=threads,
        ctx_size=ctx_size,
        prefix_cache=prefix_cache,
    )
    settings = ServerSettings(
        host=host,
        port=port,
        api_key=api_key or None,
        served_model_name=served_model_name or None,
        log_level="info" if verbose else "warning",
    )

    def say(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True)

    if api_key:
        say("clients must send the API key: Authorization: Bearer <key>")
    run_server(engine, settings, say=say, source=str(path))
    say("stopped")
