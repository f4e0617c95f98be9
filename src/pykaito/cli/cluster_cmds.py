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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pykaito.api.loading import load_path, to_dict
from pykaito.api.types import ConditionType
from pykaito.cli.output import OutputFormat, console, emit, err_console
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
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Create or update the Workspaces in a file."""
    docs = load_path(file)
    if not docs.workspaces:
        raise InputError(f"{file}: no Workspace in it")
    kube = client(namespace, context, kubeconfig)
    for ws in docs.workspaces:
        body = to_dict(ws)
        if namespace:
            body.setdefault("metadata", {})["namespace"] = namespace
        _, created = kube.apply_workspace(body)
        console.print(
            f"workspace.kaito.sh/{ws.name} {'created' if created else 'configured'}", highlight=False
        )


def get_command(
    name: Annotated[str | None, typer.Argument(help="A Workspace (default: all in the namespace).")] = None,
    output: OutputOption = OutputFormat.table,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """List Workspaces with upstream's printer columns."""
    kube = client(namespace, context, kubeconfig)
    items = [kube.get_workspace(name)] if name else kube.list_workspaces()
    if output is not OutputFormat.table:
        emit(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    if not items:
        console.print(f"No workspaces in namespace {kube.namespace}.", highlight=False)
        return
    table = Table(box=None, header_style="bold")
    for column in COLUMNS:
        table.add_column(column)
    for ws in items:
        table.add_row(*row(ws))
    console.print(table)


def describe_command(
    name: Annotated[str, typer.Argument(help="The Workspace.")],
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Conditions, events and the sizing plan of one Workspace."""
    kube = client(namespace, context, kubeconfig)
    ws = kube.get_workspace(name)
    meta, status = ws.get("metadata") or {}, ws.get("status") or {}
    preset = ((ws.get("inference") or {}).get("preset") or {}).get("name", "-")
    for label, value in (
        ("Name", meta.get("name")),
        ("Namespace", meta.get("namespace")),
        ("Preset", preset),
        ("Instance", (ws.get("resource") or {}).get("instanceType") or "(bring your own nodes)"),
        ("State", status.get("state") or "-"),
        ("Target nodes", status.get("targetNodeCount") or "-"),
        ("Worker nodes", ", ".join(status.get("workerNodes") or []) or "-"),
        ("Age", age(meta.get("creationTimestamp"))),
    ):
        console.print(f"[bold]{label + ':':<14}[/]{value}", highlight=False)
    table = Table(title="Conditions", box=None, header_style="bold", title_justify="left")
    for column in ("TYPE", "STATUS", "REASON", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for c in status.get("conditions") or []:
        table.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
    console.print(table)
    events = Table(title="Events", box=None, header_style="bold", title_justify="left")
    for column in ("TYPE", "REASON", "AGE", "MESSAGE"):
        events.add_column(column, overflow="fold")
    for e in kube.events_for(name):
        when = (
            e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
        )
        events.add_row(e.get("type", ""), e.get("reason", ""), age(when), e.get("message", ""))
    console.print(events)
    console.print("[bold]Plan[/]")
    try:
        from pykaito.api.loading import parse_workspace
        from pykaito.planner import plan

        workspace = parse_workspace({k: v for k, v in ws.items() if k != "status"})
        for line in plan(workspace).explanation:
            console.print(f"  {line}", highlight=False)
    except PykaitoError as exc:
        console.print(f"  unavailable: {exc}", highlight=False)


def delete_command(
    name: Annotated[str, typer.Argument(help="The Workspace.")],
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Delete a Workspace (the operator then releases its nodes)."""
    kube = client(namespace, context, kubeconfig)
    kube.delete_workspace(name)
    console.print(f'workspace.kaito.sh "{name}" deleted', highlight=False)


def wait_command(
    name: Annotated[str, typer.Argument(help="The Workspace.")],
    condition: Annotated[str, typer.Option("--for", help="What to wait for: ready or delete.")] = "ready",
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up after this long (30s, 10m, 1h).")
    ] = "30m",
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Wait until a Workspace is Ready (or deleted), showing its progress."""
    if condition not in {"ready", "delete"}:
        raise InputError(f"--for {condition!r}: use ready or delete")
    limit = parse_duration(timeout)
    kube = client(namespace, context, kubeconfig)
    deadline = time.monotonic() + limit
    last = "waiting"
    with err_console.status(f"waiting for workspace {name}…") as spinner:
        while True:
            try:
                ws: dict[str, Any] | None = kube.get_workspace(name)
            except ClusterError as exc:
                if condition == "delete" and "not found" in str(exc):
                    ws = None
                else:
                    raise
            if condition == "delete" and ws is None:
                console.print(f"workspace {name} deleted", highlight=False)
                return
            if ws is not None:
                reason = not_ready_reason(ws)
                if condition == "ready" and reason is None:
                    console.print(f"workspace {name} is ready", highlight=False)
                    return
                state = (ws.get("status") or {}).get("state") or "Pending"
                last = f"{state}: {reason}" if reason else state
                spinner.update(f"workspace {name}: {last}")
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out after {timeout} waiting for workspace {name}: {last}")
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def logs_command(
    name: Annotated[str, typer.Argument(help="The Workspace.")],
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
    workspace: Annotated[str, typer.Argument(help="The Workspace to connect to.")],
    port: Annotated[int, typer.Option("--port", "-p", help="Local port of the tunnel.")] = 8080,
    open_ui: Annotated[bool, typer.Option("--open-ui", help="Also start the web app (kaito ui).")] = False,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Tunnel a Ready Workspace to localhost:PORT, test it, and keep it open until Ctrl-C."""
    kube = client(namespace, context, kubeconfig)
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
