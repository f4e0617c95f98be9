"""The ``transformers serve`` launcher, for Workspaces annotated ``kaito.sh/runtime: transformers``.

The pod runs ``pykaito-runtime transformers <planned arguments>``; this module turns that into

    transformers serve <model> --continuous-batching --device cuda --dtype bfloat16 --host 0.0.0.0 --port 5000

and execs it. The model is given as a positional argument: a local directory when the weights
are already on the weights volume, otherwise the Hugging Face id, which ``transformers serve``
downloads into that volume (``HF_HUB_CACHE``). Without continuous batching requests run one at
a time, so the launcher adds it unless the inference config turns it off.

``transformers serve`` has no hook for middleware: ``KAITO_API_KEY`` and queue limits are not
enforced with this runtime, and the launcher says so in the log.
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
from pykaito.runtime.middleware import API_KEY_ENV

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path("/workspace/weights")
OWNED = ("--port",)
DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--continuous-batching", None),
    ("--device", "cuda"),
    ("--dtype", "auto"),
    ("--host", "0.0.0.0"),
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
    if environ.get(API_KEY_ENV):
        log.warning(
            "%s is set, but transformers serve cannot check API keys: the endpoint is open to "
            "anyone who can reach it; use the vLLM runtime to require a key",
            API_KEY_ENV,
        )
    argv = ["transformers", "serve", local_model(model, weights_dir), *flatten(args), "--port", str(PORT)]
    return Launch(argv, env)
