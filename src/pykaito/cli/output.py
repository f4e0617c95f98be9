"""Shared output helpers for the CLI: one-line failures, tables, and --output json|yaml."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, NoReturn

import yaml
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    wide = "wide"  # the table with every column
    json = "json"
    yaml = "yaml"


class DocumentFormat(StrEnum):
    """For commands whose text is already YAML (manifests): YAML or JSON."""

    yaml = "yaml"
    json = "json"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line to stderr and exit; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def emit(data: Any, fmt: OutputFormat | DocumentFormat) -> None:
    """Print data as JSON or YAML (for the machine-readable --output formats)."""
    if fmt.value == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def print_fields(rows: Iterable[tuple[str, Any]]) -> None:
    """The ``Label:   value`` lines at the top of a ``kaito describe``."""
    for label, value in rows:
        console.print(f"[bold]{label + ':':<14}[/]{value}", highlight=False)


def print_conditions(conditions: Iterable[dict[str, Any]]) -> None:
    table = Table(title="Conditions", box=None, header_style="bold", title_justify="left")
    for column in ("TYPE", "STATUS", "REASON", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for c in conditions:
        table.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
    console.print(table)


def print_events(events: Iterable[dict[str, Any]], age: Callable[[Any], str]) -> None:
    table = Table(title="Events", box=None, header_style="bold", title_justify="left")
    for column in ("TYPE", "REASON", "AGE", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for e in events:
        when = (
            e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
        )
        table.add_row(e.get("type", ""), e.get("reason", ""), age(when), e.get("message", ""))
    console.print(table)
