"""The vLLM launcher: planned arguments + ConfigMap overrides -> ``vllm serve`` with our middleware.

The pod runs ``pykaito-runtime vllm <planned arguments>``. This module turns that into

    vllm serve <model> <planned args, overridden by inference_config.yaml's vllm: section>
        --middleware pykaito.runtime.middleware.QueueAndAuthMiddleware --port 5000

and execs it. The middleware checks ``KAITO_API_KEY`` and answers 429 once vLLM's waiting queue
holds more than ``--max-num-seqs`` requests per engine (passed to it as ``KAITO_MAX_WAITING``).

Data parallel: with ``--data-parallel-size`` N above 1, vLLM starts one API server per rank
unless ``--api-server-count`` says otherwise, and each would read only its own process's
gauges. The launcher therefore runs one API server (``--api-server-count 1``, which the
inference config cannot change), whose ``vllm:num_requests_waiting`` gauge sums the waiting
requests of all N engines, and sets the limit to N x ``--max-num-seqs``.
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
    value_of,
)
from pykaito.runtime.middleware import MAX_WAITING_ENV

log = logging.getLogger(__name__)

MIDDLEWARE = "pykaito.runtime.middleware.QueueAndAuthMiddleware"
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's own default
OWNED = ("--port", "--middleware", "--api-server-count")


def vllm_launch(
    planned: Sequence[str],
    *,
    config: Path | None = CONFIG_PATH,
    overrides: Mapping[str, Any] | None = None,
) -> Launch:
    """The ``vllm serve`` command for planned arguments.

    ``overrides`` (default: the ``vllm:`` section of ``config``) replace planned values in
    place, add new options in sorted order, and remove an option set to ``false`` or ``null``.
    The port (5000) and the middleware belong to the launcher and cannot be overridden.
    """
    positional, args = parse(planned)
    model = take(args, "--model")
    model = positional or model
    extra = dict(read_overrides(config, "vllm") if overrides is None else overrides)
    override_model = extra.pop("model", None)
    if override_model:
        model = str(override_model)
    if not model:
        raise InputError("no model to serve: pass it first or as --model <Hugging Face id or directory>")
    args = apply_overrides(args, extra, OWNED)
    take(args, *OWNED)
    max_num_seqs = value_of(args, "--max-num-seqs") or str(DEFAULT_MAX_NUM_SEQS)
    if not max_num_seqs.isdigit():
        raise InputError(f"--max-num-seqs must be a whole number, got {max_num_seqs!r}")
    data_parallel = value_of(args, "--data-parallel-size") or "1"
    if not data_parallel.isdigit() or int(data_parallel) < 1:
        raise InputError(f"--data-parallel-size must be a whole number of at least 1, got {data_parallel!r}")
    argv = ["vllm", "serve", model, *flatten(args), "--middleware", MIDDLEWARE]
    if int(data_parallel) > 1:
        argv += ["--api-server-count", "1"]  # one API server sees every rank's queue: the limit holds
    argv += ["--port", str(PORT)]
    return Launch(argv, {MAX_WAITING_ENV: str(int(max_num_seqs) * int(data_parallel))})
