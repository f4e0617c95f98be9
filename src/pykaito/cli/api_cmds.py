"""``kaito validate`` and ``kaito crd``: the Workspace API from the command line."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import yaml

from pykaito.api.crd import crd_yaml, generate_crd
from pykaito.api.inferenceset import InferenceSet
from pykaito.api.loading import Documents, collect_path
from pykaito.api.types import CONFIG_KEY, Workspace
from pykaito.api.validation import ValidationContext, validate
from pykaito.catalog.loader import load_catalog
from pykaito.cli.output import DocumentFormat, OutputFormat, emit, err_console, fail
from pykaito.errors import CatalogError, FieldError, PykaitoError


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


def plan_errors(workspace: Workspace, docs: Documents) -> list[FieldError]:
    """What `kaito plan` would refuse in a Workspace the admission rules accept (sizing, hardware)."""
    if not workspace.preset_name or workspace.tuning is not None:
        return []  # a template runs as written; tuning is refused by the rules already
    if workspace.resource is None or not workspace.resource.instanceType:
        return []  # your own nodes: the sizing depends on them, checked when they are known
    from pykaito.planner import plan

    config = None
    inference = workspace.inference
    if inference is not None and inference.config:
        raw = docs.config_maps(workspace.namespace).get(inference.config, {}).get(CONFIG_KEY)
        loaded = yaml.safe_load(raw) if raw else None
        config = loaded if isinstance(loaded, dict) else None
    try:
        plan(workspace, load_catalog(), config=config)
    except CatalogError as exc:
        where = "resource.instanceType" if "instance type" in str(exc) else "inference.preset.name"
        return [FieldError(where, str(exc))]
    except (PykaitoError, yaml.YAMLError) as exc:
        return [FieldError("resource", str(exc))]
    return []


SPEC_HINT = (
    "kaito.sh/v1beta1 Workspaces have no `spec`: move `resource` and `inference` (everything under"
    " `spec:`) to the top level, next to `metadata`"
)


def _print_errors(subject: str, errors: list[FieldError]) -> None:
    for error in errors:
        if error.path == "spec":
            error = FieldError("spec", SPEC_HINT)
        err_console.print(f"[bold red]error:[/] {subject}: {error}", highlight=False, soft_wrap=True)


def _error_dicts(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"path": e.path, "message": e.message} for e in errors]


def validate_command(
    filename: Annotated[
        str,
        typer.Option(
            "--filename", "-f", help="A Workspace YAML file (several documents allowed), or - for stdin."
        ),
    ],
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table (lines for people), json or yaml")
    ] = OutputFormat.table,
) -> None:
    """Check every Workspace and InferenceSet in a file against the admission rules, offline.

    Every document is checked: one of the wrong shape (an unknown field, a wrong type) is
    reported with its file:line and field paths, and the documents after it are still checked.
    Uses the ConfigMaps and Secrets found in the same file; the cluster is not consulted.
    With -o json or yaml, prints one result per Workspace and InferenceSet (valid, errors with
    their field path, notes) and the documents that could not be read; the exit status is 2
    when anything is invalid, as without.
    """
    from pykaito.api.setrules import collect_sets

    machine = output is not OutputFormat.table
    try:
        docs = collect_path(filename)
    except PykaitoError as exc:
        fail(str(exc))
    found_sets, set_invalid = collect_sets(docs)
    invalid = [*docs.invalid, *set_invalid]
    if not docs.workspaces and not found_sets and not invalid:
        fail(f"{docs.source}: no Workspace found (a document with `kind: Workspace`)")
    for document in invalid:
        if not machine:
            _print_errors(document.source, document.errors)
    failed = 0
    results: list[dict[str, Any]] = []
    for workspace in docs.workspaces:
        subject = f"workspace/{workspace.name or '?'}"
        context, notes = offline_context(workspace, docs)
        errors = validate(workspace, context=context) or plan_errors(workspace, docs)
        failed += bool(errors)
        results.append(
            {
                "name": workspace.name,
                "namespace": workspace.namespace,
                "valid": not errors,
                "errors": _error_dicts(errors),
                "notes": notes,
            }
        )
        if machine:
            continue
        for note in notes:
            err_console.print(f"note: {subject}: {note}", highlight=False, soft_wrap=True)
        if errors:
            _print_errors(subject, errors)
        else:
            sys.stdout.write(f"{subject} valid\n")
    set_results = validate_sets(docs, found_sets, show=not machine)
    failed_sets = sum(not r["valid"] for r in set_results)
    if machine:
        report: dict[str, Any] = {
            "source": docs.source,
            "valid": not (failed or failed_sets or invalid),
            "workspaces": results,
        }
        if found_sets:
            report["inferencesets"] = set_results
        if invalid:
            report["invalid_documents"] = [
                {"source": d.source, "errors": _error_dicts(d.errors)} for d in invalid
            ]
        emit(report, output)
        if not report["valid"]:
            sys.exit(2)
        return
    if not (failed or failed_sets or invalid):
        return
    total = len(docs.workspaces) + len(found_sets) + len(invalid)
    bad = failed + failed_sets + len(invalid)
    if invalid or (found_sets and docs.workspaces):
        kind = "document" if total == 1 else "documents"
    elif found_sets:
        kind = "InferenceSet" if total == 1 else "InferenceSets"
    else:
        kind = "Workspace" if total == 1 else "Workspaces"
    fail(f"{bad} of {total} {kind} in {docs.source} invalid")


def validate_sets(docs: Documents, found: list[InferenceSet], *, show: bool) -> list[dict[str, Any]]:
    """Check InferenceSets (the template as a Workspace, the node limit): one result each."""
    from pykaito.api.setrules import validate_set
    from pykaito.planner import plan

    results: list[dict[str, Any]] = []
    for inference_set in found:
        subject = f"inferenceset/{inference_set.name or '?'}"
        context = ValidationContext(
            catalog=load_catalog(), secrets=docs.secrets(inference_set.namespace) or None
        )
        errors = validate_set(inference_set, None, context, lambda ws: plan(ws).node_count)
        results.append(
            {
                "name": inference_set.name,
                "namespace": inference_set.namespace,
                "valid": not errors,
                "errors": _error_dicts(errors),
            }
        )
        if not show:
            continue
        if errors:
            _print_errors(subject, errors)
        else:
            sys.stdout.write(f"{subject} valid\n")
    return results


def crd_command(
    kind: Annotated[
        str, typer.Option("--kind", help="Workspace or InferenceSet.", case_sensitive=False)
    ] = "Workspace",
    output: Annotated[
        DocumentFormat, typer.Option("--output", "-o", help="yaml or json")
    ] = DocumentFormat.yaml,
) -> None:
    """Print the CustomResourceDefinition for workspaces.kaito.sh or inferencesets.kaito.sh."""
    if kind.lower() == "inferenceset":
        from pykaito.api.setcrd import generate_set_crd, set_crd_yaml

        if output is DocumentFormat.json:
            emit(generate_set_crd(), output)
            return
        sys.stdout.write(set_crd_yaml())
    elif kind.lower() == "workspace":
        if output is DocumentFormat.json:
            emit(generate_crd(), output)
            return
        sys.stdout.write(crd_yaml())
    else:
        fail(f"--kind {kind!r}: expected Workspace or InferenceSet")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("validate")(validate_command)
    app.command("crd")(crd_command)
