"""Cluster commands: apply, get, describe, delete, wait, logs and connect (Workspaces on Kubernetes).

Every command takes ``--namespace/-n``, ``--context`` and ``--kubeconfig`` and finds the cluster as
kubectl does. Failures (no cluster, no such Workspace, not Ready) print one line and exit 2.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pykaito.api.loading import load_path, to_dict
from pykaito.api.types import ConditionType
from pykaito.cli import set_cmds
from pykaito.cli.output import (
    OutputFormat,
    console,
    emit,
    err_console,
    print_conditions,
    print_events,
    print_fields,
)
from pykaito.cli.performance import WIDE_COLUMNS, GetFormat, describe_lines, wide_cells
from pykaito.cli.signals import sigterm_as_interrupt
from pykaito.errors import ClusterError, InputError, PykaitoError

if TYPE_CHECKING:  # the kubernetes client is imported by the commands that need it
    from pykaito.client.kube import KubeClient

Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace (default: the context's).")
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="Path to the kubeconfig file.")]
OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]

COLUMNS = (
    "NAME",
    "INSTANCE",
    "RESOURCEREADY",
    "INFERENCEREADY",
    "WORKSPACESUCCEEDED",
    "TARGETNODECOUNT",
    "STATE",
    "AGE",
)
READY_ORDER = (
    ConditionType.NODE_CLAIM_READY,
    ConditionType.NODES_READY,
    ConditionType.RESOURCE_READY,
    ConditionType.INFERENCE_READY,
    ConditionType.WORKSPACE_SUCCEEDED,
)


def client(namespace: str | None, context: str | None, kubeconfig: str | None) -> KubeClient:
    from pykaito.client.kube import KubeClient

    return KubeClient(kubeconfig=kubeconfig, context=context, namespace=namespace)


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h30m`` or plain seconds, as seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text.strip()):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise InputError(f"--timeout {text!r}: use a duration such as 90s, 30m or 1h")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    if not timestamp:
        return "-"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(tz=datetime.UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def conditions(ws: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (ws.get("status") or {}).get("conditions") or []}


def row(ws: dict[str, Any]) -> list[str]:
    conds = conditions(ws)
    status = ws.get("status") or {}
    meta = ws.get("metadata") or {}

    def flag(kind: ConditionType) -> str:
        return str(conds.get(kind, {}).get("status", ""))

    return [
        str(meta.get("name", "")),
        str((ws.get("resource") or {}).get("instanceType") or ""),
        flag(ConditionType.RESOURCE_READY),
        flag(ConditionType.INFERENCE_READY),
        flag(ConditionType.WORKSPACE_SUCCEEDED),
        str(status.get("targetNodeCount") or ""),
        str(status.get("state") or ""),
        age(meta.get("creationTimestamp")),
    ]


def not_ready_reason(ws: dict[str, Any]) -> str | None:
    """None when the Workspace is Ready; otherwise which condition is not, and why."""
    conds = conditions(ws)
    if all(conds.get(k, {}).get("status") == "True" for k in READY_ORDER):
        return None
    for kind in READY_ORDER:
        c = conds.get(kind)
        if c is None:
            return f"{kind} is not reported yet (is the operator running?)"
        if c.get("status") != "True":
            detail = f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") else ""
            return f"{kind} is {c.get('status')}{detail}"
    return "not ready"


def apply_command(
    file: Annotated[Path, typer.Option("--filename", "-f", help="Workspace YAML (one or more documents).")],
    output: OutputOption = OutputFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Create or update the Workspaces in a file."""
    docs = load_path(file)
    found_sets = set_cmds.sets_in(docs)
    if not docs.workspaces and not found_sets:
        raise InputError(f"{file}: no Workspace or InferenceSet in it")
    kube = client(namespace, context, kubeconfig)
    set_cmds.apply(kube, found_sets, namespace)
    results = []
    for ws in docs.workspaces:
        body = to_dict(ws)
        if namespace:
            body.setdefault("metadata", {})["namespace"] = namespace
        _, created = kube.apply_workspace(body)
        action = "created" if created else "configured"
        results.append(
            {
                "name": ws.name,
                "namespace": namespace or ws.metadata.namespace or kube.namespace,
                "action": action,
            }
        )
        if output is OutputFormat.table:
            console.print(f"workspace.kaito.sh/{ws.name} {action}", highlight=False)
    if output is not OutputFormat.table:
        emit(results, output)


def get_command(
    name: Annotated[
        str | None, typer.Argument(help="A Workspace (default: all); `is` or is/NAME for InferenceSets.")
    ] = None,
    output: Annotated[
        GetFormat,
        typer.Option("--output", "-o", help="table, wide (with measured performance), json or yaml"),
    ] = GetFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """List Workspaces with upstream's printer columns (`kaito get is` lists InferenceSets)."""
    kube = client(namespace, context, kubeconfig)
    if (target := set_cmds.set_target(name)) is not None:
        set_cmds.get(kube, target, OutputFormat.table if output is GetFormat.wide else output, age)
        return
    items = [kube.get_workspace(name)] if name else kube.list_workspaces()
    if output in (GetFormat.json, GetFormat.yaml):
        emit(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    wide = output is GetFormat.wide
    if not items:
        console.print(f"No workspaces in namespace {kube.namespace}.", highlight=False)
        return
    table = Table(box=None, header_style="bold")
    for column in COLUMNS + (WIDE_COLUMNS if wide else ()):
        table.add_column(column)
    for ws in items:
        table.add_row(*row(ws), *(wide_cells(ws) if wide else ()))
    console.print(table)


def _plan_lines(ws: dict[str, Any]) -> tuple[list[str], str | None]:
    """The plan's explanation for a stored Workspace, or why there is none."""
    from pykaito.api.loading import parse_workspace
    from pykaito.planner import plan

    try:
        workspace = parse_workspace({k: v for k, v in ws.items() if k != "status"})
        return list(plan(workspace).explanation), None
    except PykaitoError as exc:
        return [], str(exc)


def describe_command(
    name: Annotated[str, typer.Argument(help="The Workspace, or is/NAME for an InferenceSet.")],
    output: OutputOption = OutputFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Conditions, events and the sizing plan of one Workspace."""
    kube = client(namespace, context, kubeconfig)
    if target := set_cmds.set_target(name):
        set_cmds.describe(kube, target, age)
        return
    ws = kube.get_workspace(name)
    if output is not OutputFormat.table:
        lines, problem = _plan_lines(ws)
        plan_data: dict[str, Any] = {"explanation": lines} if problem is None else {"unavailable": problem}
        emit({"workspace": ws, "events": kube.events_for(name), "plan": plan_data}, output)
        return
    meta, status = ws.get("metadata") or {}, ws.get("status") or {}
    preset = ((ws.get("inference") or {}).get("preset") or {}).get("name", "-")
    print_fields(
        [
            ("Name", meta.get("name")),
            ("Namespace", meta.get("namespace")),
            ("Preset", preset),
            ("Instance", (ws.get("resource") or {}).get("instanceType") or "(bring your own nodes)"),
            ("State", status.get("state") or "-"),
            ("Target nodes", status.get("targetNodeCount") or "-"),
            ("Worker nodes", ", ".join(status.get("workerNodes") or []) or "-"),
            ("Age", age(meta.get("creationTimestamp"))),
        ]
    )
    print_conditions(status.get("conditions") or [])
    print_events(kube.events_for(name), age)
    console.print("[bold]Performance[/]")
    for line in describe_lines(ws):
        console.print(line, highlight=False)
    console.print("[bold]Plan[/]")
    lines, problem = _plan_lines(ws)
    for line in lines:
        console.print(f"  {line}", highlight=False)
    if problem is not None:
        console.print(f"  unavailable: {problem}", highlight=False)


def delete_command(
    name: Annotated[str, typer.Argument(help="The Workspace, or is/NAME for an InferenceSet.")],
    output: OutputOption = OutputFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Delete a Workspace (the operator then releases its nodes)."""
    kube = client(namespace, context, kubeconfig)
    if target := set_cmds.set_target(name):
        set_cmds.delete(kube, target)
        return
    kube.delete_workspace(name)
    if output is not OutputFormat.table:
        emit({"name": name, "namespace": kube.namespace, "action": "deleted"}, output)
        return
    console.print(f'workspace.kaito.sh "{name}" deleted', highlight=False)


def wait_command(
    name: Annotated[str, typer.Argument(help="The Workspace, or is/NAME for an InferenceSet.")],
    condition: Annotated[str, typer.Option("--for", help="What to wait for: ready or delete.")] = "ready",
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up after this long (30s, 10m, 1h).")
    ] = "30m",
    output: OutputOption = OutputFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Wait until a Workspace is Ready (or deleted), showing its progress."""
    if condition not in {"ready", "delete"}:
        raise InputError(f"--for {condition!r}: use ready or delete")
    limit = parse_duration(timeout)
    kube = client(namespace, context, kubeconfig)
    if target := set_cmds.set_target(name):
        client_for_set = set_cmds.sets(kube)
        outcome, obj = _wait_until(
            "inferenceset",
            target,
            lambda: client_for_set.get(target),
            condition,
            limit,
            timeout,
            set_cmds.not_ready_reason,
        )
        _waited("inferenceset", target, outcome, obj, output)
        return
    outcome, obj = _wait_until(
        "workspace", name, lambda: kube.get_workspace(name), condition, limit, timeout, _workspace_progress
    )
    _waited("workspace", name, outcome, obj, output)


def _workspace_progress(ws: dict[str, Any]) -> str | None:
    """None once the Workspace is ready, else what it is doing."""
    reason = not_ready_reason(ws)
    if reason is None:
        return None
    state = (ws.get("status") or {}).get("state") or "Pending"
    return f"{state}: {reason}"


def _wait_until(
    kind: str,
    name: str,
    fetch: Callable[[], dict[str, Any]],
    condition: str,
    limit: float,
    timeout: str,
    progress: Callable[[dict[str, Any]], str | None],
) -> tuple[str, dict[str, Any] | None]:
    """Poll ``fetch`` until the object is ready (``condition`` "ready") or gone ("delete").

    ``progress`` says what a not-ready object is doing (None once it is ready); a spinner shows it.
    Returns the outcome ("ready" or "deleted") and the object last read (None once deleted).
    """
    deadline = time.monotonic() + limit
    last = "waiting"
    with err_console.status(f"waiting for {kind} {name}…") as spinner:
        while True:
            try:
                obj: dict[str, Any] | None = fetch()
            except ClusterError as exc:
                if condition == "delete" and "not found" in str(exc):
                    obj = None
                else:
                    raise
            if condition == "delete" and obj is None:
                return "deleted", None
            if obj is not None:
                waiting = progress(obj)
                if condition == "ready" and waiting is None:
                    return "ready", obj
                last = waiting or "ready"
                spinner.update(f"{kind} {name}: {last}")
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out after {timeout} waiting for {kind} {name}: {last}")
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def _waited(kind: str, name: str, outcome: str, obj: dict[str, Any] | None, output: OutputFormat) -> None:
    if output is OutputFormat.table:
        console.print(f"{kind} {name} {'is ready' if outcome == 'ready' else outcome}", highlight=False)
        return
    state = ((obj or {}).get("status") or {}).get("state")
    emit({"name": name, "outcome": outcome, "state": state}, output)


def logs_command(
    name: Annotated[str, typer.Argument(help="The Workspace, or is/NAME for an InferenceSet.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines.")] = None,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print the inference server's logs (pod 0; every pod's when not following)."""
    kube = client(namespace, context, kubeconfig)
    kube.get_workspace(name)
    pods = sorted(str(p["metadata"]["name"]) for p in kube.pods_for(name))
    if not pods:
        raise ClusterError(f"workspace {name!r} has no pods yet (`kaito describe {name}` says why)")
    if follow:
        for line in kube.follow_pod_logs(pods[0]):
            typer.echo(line, nl=not line.endswith("\n"))
        return
    for pod in pods:
        if len(pods) > 1:
            console.print(f"==> {pod} <==", style="bold", highlight=False)
        typer.echo(kube.pod_logs(pod, tail=tail), nl=False)


def connect_command(
    workspace: Annotated[
        str, typer.Argument(help="The Workspace to connect to, or is/NAME (a ready replica of the set).")
    ],
    port: Annotated[int, typer.Option("--port", "-p", help="Local port of the tunnel.")] = 8080,
    open_ui: Annotated[bool, typer.Option("--open-ui", help="Also start the web app (kaito ui).")] = False,
    save: Annotated[
        str | None,
        typer.Option("--save", help="Also save this tunnel as a connection NAME (kaito chat --connection)."),
    ] = None,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Tunnel a Ready Workspace to localhost:PORT, test it, and keep it open until Ctrl-C."""
    if save is not None:
        from pykaito.apps.connections import check_name

        check_name(save)
    kube = client(namespace, context, kubeconfig)
    if target := set_cmds.set_target(workspace):
        workspace = set_cmds.ready_replica(kube, target)
    ws = kube.get_workspace(workspace)
    reason = not_ready_reason(ws)
    if reason is not None:
        raise ClusterError(
            f"workspace {workspace!r} is not ready: {reason}; `kaito describe {workspace}` shows more"
        )
    from pykaito.client.portforward import PortForward

    forward = PortForward(kube, workspace, local_port=port)
    forward.check()
    with forward, sigterm_as_interrupt():
        model = check_endpoint(forward.url)
        console.print(
            f"[bold green]connected[/] to workspace {workspace} ({model}) at [bold]{forward.url}[/]"
        )
        console.print(f"  terminal chat:  kaito chat --endpoint {forward.url}", highlight=False)
        console.print(f"  web chat:       kaito ui --endpoint {forward.url}", highlight=False)
        console.print(f"  OpenAI clients: base_url={forward.url}/v1", highlight=False)
        if save is not None:
            from pykaito.apps.connections import Connection, ConnectionStore

            ConnectionStore().add(
                Connection(save, forward.url, "workspace", workspace, kube.namespace), replace=True
            )
            console.print(f"  saved as connection {save}: kaito chat --connection {save}", highlight=False)
        ui = start_ui(forward.url) if open_ui else None
        console.print("keeping the tunnel open; press Ctrl-C to stop", style="dim")
        try:
            while ui is None or ui.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            if ui is not None and ui.poll() is None:
                ui.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    ui.wait(timeout=10)
    console.print("tunnel closed", style="dim")


def check_endpoint(url: str) -> str:
    """GET /v1/models and a one-token completion through the tunnel; the model's name."""
    import httpx

    try:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            models = http.get("/v1/models")
            models.raise_for_status()
            model = str(models.json()["data"][0]["id"])
            reply = http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            )
            reply.raise_for_status()
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise ClusterError(
            f"the tunnel to {url} is open but the server does not answer properly: {exc}"
        ) from exc
    return model


def start_ui(endpoint: str) -> subprocess.Popen[bytes]:
    """``kaito ui --endpoint URL`` as a child process."""
    kaito = Path(sys.executable).with_name("kaito")
    command = [str(kaito)] if kaito.exists() else [shutil.which("kaito") or "kaito"]
    console.print(f"starting the web app: kaito ui --endpoint {endpoint}", highlight=False)
    return subprocess.Popen([*command, "ui", "--endpoint", endpoint])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("apply")(apply_command)
    app.command("get")(get_command)
    app.command("describe")(describe_command)
    app.command("delete")(delete_command)
    app.command("wait")(wait_command)
    app.command("logs")(logs_command)
    app.command("connect")(connect_command)
