"""Shared output helpers for the CLI: one-line failures, tables, and --output json|yaml."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any, NoReturn

import yaml
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line to stderr and exit; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def emit(data: Any, fmt: OutputFormat) -> None:
    """Print data as JSON or YAML (for the machine-readable --output formats)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
