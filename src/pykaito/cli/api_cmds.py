"""``kaito validate`` and ``kaito crd``: the Workspace API from the command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pykaito.api.crd import crd_yaml
from pykaito.api.loading import Documents, SchemaError, load_path
from pykaito.api.types import Workspace
from pykaito.api.validation import ValidationContext, validate
from pykaito.catalog.loader import load_catalog
from pykaito.cli.output import err_console, fail
from pykaito.errors import FieldError, PykaitoError


def offline_context(workspace: Workspace, docs: Documents) -> tuple[ValidationContext, list[str]]:
    """What the file itself tells about the cluster, and notes on what could not be checked."""
    notes: list[str] = []
    config_maps = None
    inference = workspace.inference
    if inference is not None and inference.config:
        found = docs.config_maps(workspace.namespace)
        if inference.config in found:
            config_maps = found
        else:
            notes.append(
                f"ConfigMap {inference.config!r} is not in {docs.source}; its contents were not checked"
            )
    secrets = None
    options = inference.preset.presetOptions if inference is not None and inference.preset else None
    if options is not None and options.modelAccessSecret:
        found_secrets = docs.secrets(workspace.namespace)
        if options.modelAccessSecret in found_secrets:
            secrets = found_secrets
    context = ValidationContext(catalog=load_catalog(), config_maps=config_maps, secrets=secrets)
    return context, notes


def _print_errors(subject: str, errors: list[FieldError]) -> None:
    for error in errors:
        err_console.print(f"[bold red]error:[/] {subject}: {error}", highlight=False, soft_wrap=True)


def validate_command(
    filename: Annotated[
        str,
        typer.Option(
            "--filename", "-f", help="A Workspace YAML file (several documents allowed), or - for stdin."
        ),
    ],
) -> None:
    """Check every Workspace in a file against the admission rules, offline.

    Uses the ConfigMaps and Secrets found in the same file; the cluster is not consulted.
    """
    try:
        docs = load_path(filename)
    except SchemaError as exc:
        _print_errors(exc.source, exc.errors)
        fail(f"{len(exc.errors)} error(s) in {filename}: fix them and run again")
    except PykaitoError as exc:
        fail(str(exc))
    if not docs.workspaces:
        fail(f"{docs.source}: no Workspace found (a document with `kind: Workspace`)")
    failed = 0
    for workspace in docs.workspaces:
        subject = f"workspace/{workspace.name or '?'}"
        context, notes = offline_context(workspace, docs)
        errors = validate(workspace, context=context)
        for note in notes:
            err_console.print(f"note: {subject}: {note}", highlight=False, soft_wrap=True)
        if errors:
            failed += 1
            _print_errors(subject, errors)
        else:
            sys.stdout.write(f"{subject} valid\n")
    if failed:
        fail(f"{failed} of {len(docs.workspaces)} Workspace(s) in {docs.source} invalid")


def crd_command() -> None:
    """Print the CustomResourceDefinition for workspaces.kaito.sh (apply it with kubectl)."""
    sys.stdout.write(crd_yaml())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("validate")(validate_command)
    app.command("crd")(crd_command)
