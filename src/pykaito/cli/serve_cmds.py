"""``kaito serve``: an OpenAI-compatible server on this machine, with the llama.cpp engine."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pykaito.cli.output import err_console
from pykaito.errors import InputError
from pykaito.runtime.settings import LOCAL_PORT


class Speculative(StrEnum):
    off = "off"
    ngram = "ngram"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(serve)


def serve(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A pulled model (kaito models) or a preset to pull with --pull; sized to free memory."
        ),
    ] = None,
    pull: Annotated[bool, typer.Option("--pull", help="Pull NAME first if it is not pulled yet.")] = False,
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
            help="Require this key (Authorization: Bearer) on the API. On the command line it shows in "
            "the process list: prefer the environment variable or --api-key-file.",
            show_envvar=True,
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            envvar="KAITO_API_KEY_FILE",
            help="Require the key written on this file's first line.",
            show_envvar=True,
        ),
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model id clients send (default: the preset or file name).")
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Requests that may wait for a slot; more get HTTP 429.")
    ] = 64,
    parallel: Annotated[
        int | None,
        typer.Option(
            help="Requests decoded together (continuous batching); for NAME chosen from free memory."
        ),
    ] = None,
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
    speculative: Annotated[
        Speculative,
        typer.Option(
            help="ngram: requests also verify draft tokens copied from their own prompt and output "
            "and from earlier replies, several tokens per step where the text repeats; greedy output "
            "is the same and sampled output keeps its distribution. off: one token per step. A "
            'request opts out with "speculative": false.',
        ),
    ] = Speculative.ngram,
    chat_template_file: Annotated[
        Path | None,
        typer.Option(
            help="A Jinja chat template to use instead of the model's own; one that renders tools enables "
            "tool calling."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Serve a model with an OpenAI-compatible API (chat, completions, streaming, /metrics).

    With no options it serves smollm2-135m-instruct, shipped with pykaito, on http://127.0.0.1:8080/v1.
    `kaito serve NAME` serves a model pulled with `kaito pull NAME` (`--pull` pulls it first).
    """
    from pykaito.catalog.embedded import embedded_gguf_path
    from pykaito.runtime.serve import llamacpp_engine
    from pykaito.runtime.serve import serve as run_server
    from pykaito.runtime.settings import ServerSettings, resolve_api_key

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    api_key = resolve_api_key(api_key, api_key_file, environ={})
    if speculative is not Speculative.off:  # the acceptance rate, every 10 s while drafts are verified
        logging.getLogger("pykaito.runtime.speculative").setLevel(logging.INFO)

    def say(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True)

    if name is not None and model is not None:
        raise InputError("give a model NAME or --model FILE.gguf, not both")
    if name is not None and name.endswith(".gguf") and Path(name).expanduser().is_file():
        model, name = Path(name), None
    if name is not None:
        from pykaito.cli.models_cmds import local_model, local_sizing

        pulled = local_model(name, pull_first=pull)
        path, served_model_name = pulled.path, served_model_name or pulled.name
        if ctx_size == 0:
            sizing = local_sizing(pulled, parallel)
            parallel, ctx_size = sizing.parallel, sizing.ctx_size
            say(
                f"{pulled.name}: {sizing.parallel} parallel slots x {sizing.context_per_slot} tokens "
                f"(`kaito plan {name} --cpu` explains)"
            )
    else:
        path = embedded_gguf_path() if model is None else model.expanduser()
    engine = llamacpp_engine(
        path,
        served_model_name=served_model_name or "",
        max_queue=max_queue,
        parallel=parallel or 8,
        threads=threads,
        ctx_size=ctx_size,
        prefix_cache=prefix_cache,
        chat_template_file=chat_template_file,
        speculative=speculative.value,
    )
    settings = ServerSettings(
        host=host,
        port=port,
        api_key=api_key or None,
        served_model_name=served_model_name or None,
        log_level="info" if verbose else "warning",
    )

    if api_key:
        say("clients must send the API key: Authorization: Bearer <key>")
    run_server(engine, settings, say=say, source=str(path))
    say("stopped")
