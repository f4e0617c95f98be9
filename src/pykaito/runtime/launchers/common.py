"""What the launchers share: parsing the planned arguments, reading ConfigMap overrides, exec.

Planned arguments arrive as the pod's command line (``--name value``, ``--switch``,
``--name=value``, or a flag with several values such as ``--lora-modules a=x b=y``), and may
start with the model as a positional argument.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from pykaito.errors import InputError
from pykaito.planner.engine_args import Arg, flag_name, merge_overrides
from pykaito.runtime.launchers.gate import GateSettings, run_gated

log = logging.getLogger(__name__)

CONFIG_PATH = Path("/mnt/config/inference_config.yaml")
PORT = 5000
_SEP = "\x1f"  # joins the values of a multi-valued flag while it passes through merge_overrides


@dataclass(frozen=True)
class Launch:
    """A command to exec, with the environment variables to add, and the gate to put in front if any."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    gate: GateSettings | None = None
    """For an engine without a middleware hook: run it as a child behind ``launchers.gate``."""

    def exec(self) -> NoReturn:
        """Replace this process with the engine, or run it behind the gate; never returns."""
        env = {**os.environ, **self.env}
        log.info("exec: %s", " ".join(self.argv))
        try:
            if self.gate is not None:
                sys.exit(run_gated(self.argv, env, self.gate))
            os.execvpe(self.argv[0], self.argv, env)
        except FileNotFoundError as exc:
            raise InputError(
                f"{self.argv[0]!r} is not installed in this image: use the runtime image built for it"
            ) from exc

    def describe(self) -> list[str]:
        """The lines ``--print-command`` shows: environment, gate, command."""
        lines = [f"{key}={value}" for key, value in sorted(self.env.items())]
        if self.gate is not None:
            key = "API key required" if self.gate.api_key else "no API key"
            lines.append(
                f"# gate on {self.gate.host}:{self.gate.port} ({key}, at most {self.gate.max_in_flight} "
                f"generations in flight) in front of:"
            )
        lines.append(" ".join(self.argv))
        return lines


def parse(argv: Sequence[str]) -> tuple[str | None, list[Arg]]:
    """Split planned arguments into a leading positional model (if any) and flag pairs."""
    positional: str | None = None
    rest = list(argv)
    if rest and not rest[0].startswith("-"):
        positional = rest.pop(0)
    args: list[Arg] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or token == "--":
            raise InputError(f"engine argument {token!r} is not an option: options start with '--'")
        if "=" in token:
            name, value = token.split("=", 1)
            args.append((name, value))
            i += 1
            continue
        values: list[str] = []
        i += 1
        while i < len(rest) and not _is_flag(rest[i]):
            values.append(rest[i])
            i += 1
        args.append((token, _SEP.join(values) if values else None))
    return positional, args


def _is_flag(token: str) -> bool:
    """``--name`` is a flag; ``-1`` or ``-0.5`` is a value."""
    if not token.startswith("-"):
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def flatten(args: Sequence[Arg]) -> list[str]:
    """Pairs back to a command line, multi-valued flags expanded."""
    argv: list[str] = []
    for name, value in args:
        argv.append(name)
        if value is not None:
            argv.extend(value.split(_SEP))
    return argv


def read_overrides(path: Path | None, section: str) -> dict[str, Any]:
    """The ``section:`` mapping of a mounted ``inference_config.yaml``; empty when there is no file."""
    if path is None or not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path} cannot be read as YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping with a '{section}:' section, not {type(data).__name__}")
    found = data.get(section) or {}
    if not isinstance(found, dict):
        raise InputError(
            f"{path}: '{section}:' must be a mapping of engine options, not {type(found).__name__}"
        )
    return {str(k): v for k, v in found.items()}


def apply_overrides(args: Sequence[Arg], overrides: Mapping[str, Any], fixed: Sequence[str]) -> list[Arg]:
    """``merge_overrides``, except that options the launcher owns (``fixed``) cannot be overridden."""
    kept: dict[str, Any] = {}
    for key, value in overrides.items():
        if flag_name(key) in fixed:
            log.warning("ignoring %s from the inference config: the runtime sets it", flag_name(key))
            continue
        kept[key] = value
    return merge_overrides(args, kept)


def take(args: list[Arg], *names: str) -> str | None:
    """Remove every flag called one of ``names``; return the last value found."""
    found: str | None = None
    for name, value in list(args):
        if name in names:
            args.remove((name, value))
            found = value
    return found


def value_of(args: Sequence[Arg], name: str) -> str | None:
    for flag, value in args:
        if flag == name:
            return value
    return None
