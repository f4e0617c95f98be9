"""`kaito connections add/list/rm`: the saved endpoints both chat apps offer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pykaito.apps.connections import Connection, ConnectionStore, Kind, read_key_file
from pykaito.cli.output import console
from pykaito.errors import InputError

connections_app = typer.Typer(
    help="Saved endpoints for `kaito chat --connection` and the web app (keys kept out of the history).",
    no_args_is_help=True,
)


@connections_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="A short name, e.g. 'prod' or 'phi4'.")],
    url: Annotated[
        str | None, typer.Argument(help="The server's URL (OpenAI-compatible); not with --workspace.")
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="A Workspace reached through `kaito connect WORKSPACE`."),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="The Workspace's namespace.")
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read the key from this file now and store it (0600 file)."),
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Read the key from this environment variable at use.")
    ] = None,
    key_file_ref: Annotated[
        Path | None, typer.Option("--api-key-ref", help="Read the key from this file at use (not copied).")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a connection of that name.")] = False,
) -> None:
    """Save a connection: NAME URL, or NAME --workspace WS (URL defaults to where `kaito connect` listens)."""
    if workspace is None and url is None:
        raise InputError("give the server's URL (kaito connections add NAME URL) or --workspace WS")
    kind: Kind = "workspace" if workspace else ("local" if name == "local" else "url")
    conn = Connection(
        name=name,
        url=url or "http://localhost:8080",
        kind=kind,
        workspace=workspace,
        namespace=namespace if workspace else None,
        key_env=api_key_env,
        key_file=str(key_file_ref.expanduser().resolve()) if key_file_ref else None,
    )
    key = read_key_file(api_key_file, "--api-key-file") if api_key_file else None
    saved = ConnectionStore().add(conn, key, replace=replace)
    console.print(
        f"saved connection [bold]{saved.name}[/] → {saved.url} (API key: {saved.key_source()})",
        highlight=False,
    )
    console.print(f"  kaito chat --connection {saved.name}", highlight=False, style="dim")


@connections_app.command("list")
def list_command() -> None:
    """The saved connections (API keys are never shown, only where they come from)."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "URL", "WHAT", "API KEY"):
        table.add_column(column, overflow="fold")
    for conn in ConnectionStore().all():
        table.add_row(conn.name, conn.url, conn.describe(), conn.key_source())
    console.print(table)


@connections_app.command("rm")
def rm_command(name: Annotated[str, typer.Argument(help="The connection to forget (and its key).")]) -> None:
    """Forget a saved connection and its stored key."""
    ConnectionStore().remove(name)
    console.print(f"removed connection {name}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(connections_app, name="connections")
