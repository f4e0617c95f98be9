"""``pykaito-runtime``: the container entry point.

    pykaito-runtime llamacpp --model PATH.gguf [--port 5000] ...   serve a GGUF with the llama.cpp engine
    pykaito-runtime vllm <vllm serve arguments>                     exec vLLM with pykaito's middleware
    pykaito-runtime transformers <transformers serve arguments>     transformers serve behind a gate
                                                                    that checks the API key and limits load

For ``vllm`` and ``transformers`` every argument is passed on, after the overrides from
``--inference-config`` (default /mnt/config/inference_config.yaml, skipped when absent).
Settings come from flags; the API key from ``KAITO_API_KEY`` (a pod reads it from a Secret),
``--api-key-file`` or ``KAITO_API_KEY_FILE``, or ``--api-key`` (visible to anyone who can run ``ps``).
``KAITO_LOG_FORMAT=json`` logs one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
from pykaito.errors import InputError, PykaitoError
from pykaito.runtime.launchers.common import CONFIG_PATH, Launch
from pykaito.runtime.settings import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    DEFAULT_PORT,
    ServerSettings,
    resolve_api_key,
)

LOG_FORMAT_ENV = "KAITO_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors in a cluster."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(LOG_FORMAT_ENV, "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def resolve_model(value: str) -> Path:
    """``embedded`` (or the embedded preset's name) is the GGUF shipped with pykaito; anything else a path."""
    if value in ("embedded", EMBEDDED_PRESET):
        return embedded_gguf_path()
    return Path(value).expanduser()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pykaito-runtime", description="Run a pykaito inference server (the container entry point)."
    )
    commands = parser.add_subparsers(dest="runtime", required=True, metavar="RUNTIME")

    llama = commands.add_parser(
        "llamacpp", help="serve a GGUF model with the llama.cpp engine", allow_abbrev=False
    )
    llama.add_argument("--model", required=True, help="a .gguf file, or 'embedded' for the built-in SmolLM2")
    llama.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all interfaces)")
    llama.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 5000)")
    llama.add_argument(
        "--served-model-name",
        nargs="+",
        default=[],
        help="model ids clients may use, the first shown in replies (default: from the file)",
    )
    llama.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429")
    llama.add_argument("--parallel", type=int, default=8, help="sequences decoded together")
    llama.add_argument("--threads", type=int, default=0, help="CPU threads (0: the physical cores, up to 8)")
    llama.add_argument(
        "--ctx-size",
        type=int,
        default=0,
        help="KV-cache tokens shared by all sequences (0: 2048 per sequence)",
    )
    llama.add_argument(
        "--chat-template-file",
        type=Path,
        default=None,
        help="a Jinja chat template to use instead of the model's own (one that renders tools enables "
        "tool calling)",
    )
    llama.add_argument(
        "--speculative",
        choices=("off", "ngram"),
        default="ngram",
        help="ngram (default): requests also verify draft tokens copied from their own prompt and "
        "output and from earlier replies, several tokens per step where text repeats (greedy output "
        "is the same, sampled output keeps its distribution); off: one token per step",
    )
    llama.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        help="compute every prompt in full instead of reusing a cached prefix",
    )
    llama.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help=f"require the key on this file's first line (Authorization: Bearer); or set ${API_KEY_ENV} "
        f"or ${API_KEY_FILE_ENV}",
    )
    llama.add_argument(
        "--api-key",
        default=None,
        help="require this key; it shows in the process list, so prefer --api-key-file or the environment",
    )
    llama.add_argument("--max-body-bytes", type=int, default=ServerSettings.max_body_bytes)
    llama.add_argument(
        "--header-timeout",
        type=float,
        default=ServerSettings.header_timeout_s,
        help="seconds a client may take to send a request's headers (default: %(default)s)",
    )
    llama.add_argument(
        "--body-timeout",
        type=float,
        default=ServerSettings.body_timeout_s,
        help="seconds a client may take to send a request body; slower gets 408 (default: %(default)s)",
    )
    llama.add_argument(
        "--max-connections",
        type=int,
        default=ServerSettings.max_connections,
        help="open connections at most; a request over the cap gets 503 (default: %(default)s)",
    )
    llama.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    for name, engine in (("vllm", "vllm serve"), ("transformers", "transformers serve")):
        sub = commands.add_parser(
            name,
            help=f"exec {engine} with the planned arguments",
            description=f"Exec {engine}; every argument not listed here is passed on.",
            allow_abbrev=False,
        )
        sub.add_argument(
            "--inference-config",
            type=Path,
            default=CONFIG_PATH,
            help=f"YAML file whose '{name}:' section overrides arguments (default: {CONFIG_PATH})",
        )
        sub.add_argument(
            "--print-command", action="store_true", help="print the command instead of running it"
        )
    return parser


def _run_llamacpp(args: argparse.Namespace) -> None:
    from pykaito.runtime.serve import llamacpp_engine, serve

    configure_logging(args.log_level)
    if args.header_timeout <= 0 or args.body_timeout <= 0 or args.max_connections < 1:
        raise InputError("--header-timeout and --body-timeout must be above 0, --max-connections at least 1")
    model = resolve_model(args.model)
    engine = llamacpp_engine(
        model,
        served_model_name=args.served_model_name[0] if args.served_model_name else "",
        max_queue=args.max_queue,
        parallel=args.parallel,
        threads=args.threads,
        ctx_size=args.ctx_size,
        prefix_cache=args.prefix_cache,
        chat_template_file=args.chat_template_file,
        speculative=args.speculative,
    )
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        api_key=resolve_api_key(args.api_key, args.api_key_file),
        served_model_name=args.served_model_name[0] if args.served_model_name else None,
        served_model_aliases=tuple(args.served_model_name[1:]),
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        log_level=args.log_level,
    )
    serve(engine, settings, say=logging.getLogger("pykaito.runtime").info, source=str(model))


def _launch(runtime: str, args: argparse.Namespace, rest: Sequence[str]) -> Launch:
    config: Path = args.inference_config
    if runtime == "vllm":
        from pykaito.runtime.launchers.vllm import vllm_launch

        return vllm_launch(rest, config=config)
    from pykaito.runtime.launchers.transformers import transformers_launch

    return transformers_launch(rest, config=config)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.runtime == "llamacpp":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            _run_llamacpp(args)
            return
        configure_logging()
        launch = _launch(args.runtime, args, rest)
        if args.print_command:
            print("\n".join(launch.describe()))
            return
        launch.exec()
    except PykaitoError as exc:
        print(f"pykaito-runtime: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
