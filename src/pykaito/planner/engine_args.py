"""Engine arguments as an ordered list of (flag, value) pairs, and ConfigMap overrides.

An argument is ``("--max-model-len", "4096")`` or, for a switch, ``("--trust-remote-code", None)``.
The planner emits them in a fixed order; overrides from a ConfigMap's ``vllm:`` section replace
a planned value in place (keeping its position) or are appended in sorted order, so the same
inputs always give the same command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Arg = tuple[str, str | None]

MULTI_VALUE_FLAGS = frozenset({"--served-model-name"})
"""Flags that take several values (``--served-model-name a b``); their value holds them space-separated."""


def flag_name(key: str) -> str:
    """``max-model-len`` or ``max_model_len`` or ``--max-model-len`` -> ``--max-model-len``."""
    return "--" + key.lstrip("-").replace("_", "-")


def _render_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def merge_overrides(base: Sequence[Arg], overrides: Mapping[str, Any]) -> list[Arg]:
    """Apply ``vllm:`` overrides to planned arguments.

    ``true`` makes a switch, ``false`` or ``null`` removes the argument, anything else
    sets the value.
    """
    result: list[Arg] = list(base)
    positions = {name: i for i, (name, _) in enumerate(result)}
    removed: set[str] = set()
    appended: list[Arg] = []
    for key in sorted(overrides):
        name = flag_name(key)
        value = overrides[key]
        if value is False or value is None:
            removed.add(name)
            continue
        arg: Arg = (name, None) if value is True else (name, _render_value(value))
        if name in positions:
            result[positions[name]] = arg
        else:
            appended.append(arg)
    return [a for a in result if a[0] not in removed] + appended


def to_argv(args: Iterable[Arg]) -> list[str]:
    """Flatten to a command line: ``["--max-model-len", "4096", "--trust-remote-code"]``; a
    multi-valued flag's names become separate words."""
    argv: list[str] = []
    for name, value in args:
        argv.append(name)
        if value is not None:
            argv.extend(value.split() if name in MULTI_VALUE_FLAGS else [value])
    return argv


def from_argv(argv: Sequence[str]) -> list[Arg]:
    """Parse ``--name value`` / ``--switch`` / ``--name=value`` back into pairs."""
    args: list[Arg] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ValueError(f"expected an option starting with '--', got {token!r}")
        if "=" in token:
            name, value = token.split("=", 1)
            args.append((name, value))
            i += 1
        elif token in MULTI_VALUE_FLAGS:
            end = i + 1
            while end < len(argv) and not argv[end].startswith("--"):
                end += 1
            args.append((token, " ".join(argv[i + 1 : end]) or None))
            i = end
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            args.append((token, argv[i + 1]))
            i += 2
        else:
            args.append((token, None))
            i += 1
    return args
