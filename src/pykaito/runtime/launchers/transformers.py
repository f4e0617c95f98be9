"""The ``transformers serve`` launcher, for Workspaces annotated ``kaito.sh/runtime: transformers``.

The pod runs ``pykaito-runtime transformers <planned arguments>``; this module turns that into

    transformers serve <model> --continuous-batching --device cuda --dtype bfloat16
        --host 127.0.0.1 --port 5001

and runs it behind ``launchers.gate`` on port 5000. The model is given as a positional
argument: a local directory when the weights are already on the weights volume, otherwise the
Hugging Face id, which ``transformers serve`` downloads into that volume (``HF_HUB_CACHE``).
Without continuous batching requests run one at a time, so the launcher adds it unless the
inference config turns it off.

``transformers serve`` has no hook for middleware, so the gate enforces what vLLM's middleware
does: ``KAITO_API_KEY`` (401) and a limit on generations in flight (429 with Retry-After;
``KAITO_MAX_IN_FLIGHT``, default 256). The engine itself listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pykaito.errors import InputError
from pykaito.runtime.launchers.common import (
    CONFIG_PATH,
    PORT,
    Launch,
    apply_overrides,
    flatten,
    parse,
    read_overrides,
    take,
)
from pykaito.runtime.launchers.gate import (
    DEFAULT_MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_ENV,
    UPSTREAM_PORT,
    GateSettings,
)
from pykaito.runtime.settings import resolve_api_key

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path("/workspace/weights")
OWNED = ("--port", "--host")
DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--continuous-batching", None),
    ("--device", "cuda"),
    ("--dtype", "auto"),
)


def local_model(model: str, weights_dir: Path) -> str:
    """A directory holding the model's weights if there is one, else the model id unchanged."""
    for candidate in (Path(model), weights_dir / model):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return str(candidate)
    return model


def transformers_launch(
    planned: Sequence[str],
    *,
    config: Path | None = CONFIG_PATH,
    overrides: Mapping[str, Any] | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    environ: Mapping[str, str] | None = None,
) -> Launch:
    """The ``transformers serve`` command; the model comes first, or as ``--force-model`` or ``--model``."""
    import os

    environ = os.environ if environ is None else environ
    positional, args = parse(planned)
    flagged = take(args, "--force-model", "--model")
    model = positional or flagged
    extra = dict(read_overrides(config, "transformers") if overrides is None else overrides)
    override_model = extra.pop("model", None) or extra.pop("force-model", None)
    if override_model:
        model = str(override_model)
    if not model:
        raise InputError(
            "no model to serve: pass it first or as --force-model <Hugging Face id or directory>"
        )
    for name, value in DEFAULTS:
        if name not in {a for a, _ in args}:
            args.append((name, value))
    args = apply_overrides(args, extra, OWNED)
    take(args, *OWNED)
    env: dict[str, str] = {}
    if "HF_HUB_CACHE" not in environ and "HF_HOME" not in environ:
        env["HF_HUB_CACHE"] = str(weights_dir)
    raw_limit = environ.get(MAX_IN_FLIGHT_ENV, "") or str(DEFAULT_MAX_IN_FLIGHT)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise InputError(f"{MAX_IN_FLIGHT_ENV}={raw_limit!r} must be a whole number of at least 1")
    gate = GateSettings(port=PORT, api_key=resolve_api_key(None, None, environ), max_in_flight=int(raw_limit))
    argv = [
        "transformers", "serve", local_model(model, weights_dir), *flatten(args),
        "--host", "127.0.0.1", "--port", str(UPSTREAM_PORT),
    ]  # fmt: skip
    return Launch(argv, env, gate)
