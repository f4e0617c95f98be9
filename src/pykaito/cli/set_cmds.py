"""InferenceSets from the command line: ``kaito scale`` and the set side of get/describe/delete/wait/connect.

The cluster commands take an InferenceSet as ``is/NAME`` (or ``inferenceset/NAME``, as kubectl
writes it); ``kaito get is`` lists them. ``kaito render`` and ``kaito validate`` pick InferenceSets
out of a file by their kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pykaito.api.inferenceset import InferenceSet
from pykaito.api.loading import Documents
from pykaito.cli.output import (
    OutputFormat,
    console,
    emit,
    print_conditions,
    print_events,
    print_fields,
)
from pykaito.errors import ClusterError, InputError, PykaitoError

if TYPE_CHECKING:
    from pykaito.client.kube import KubeClient
    from pykaito.client.sets import SetClient

SET_KINDS = ("inferencesets", "inferenceset", "isets", "is")
COLUMNS = ("NAME", "REPLICAS", "READYREPLICAS", "READY", "AGE")


def set_target(name: str | None) -> str | None:
    """``is/phi`` -> ``phi``; ``is`` alone -> ``""`` (all sets); anything else -> None (a Workspace)."""
    if name is None:
        return None
    kind, sep, rest = name.partition("/")
    if kind.lower() not in SET_KINDS:
        return None
    if sep and not rest:
        raise InputError(f"{name!r}: name the InferenceSet after the slash, e.g. is/phi-4-mini")
    return rest


def sets(kube: KubeClient) -> SetClient:
    from pykaito.client.sets import SetClient

    return SetClient(kube)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def not_ready_reason(obj: dict[str, Any]) -> str | None:
    """None when every wanted replica is ready; else why not (from InferenceSetReady)."""
    ready = _condition(obj, "InferenceSetReady")
    if ready.get("status") == "True" and _condition(obj, "ScaledToZero").get("status") != "True":
        return None
    if not ready:
        return "InferenceSetReady is not reported yet (is the operator running?)"
    zero = _condition(obj, "ScaledToZero")
    if zero.get("status") == "True":
        return f"scaled to zero ({zero.get('message')})"
    return f"InferenceSetReady is {ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"


def get(kube: KubeClient, name: str, output: OutputFormat, age: Any) -> None:
    client = sets(kube)
    items = [client.get(name)] if name else client.list_sets()
    if output is not OutputFormat.table:
        emit(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    if not items:
        console.print(f"No inferencesets in namespace {client.namespace}.", highlight=False)
        return
    table = Table(box=None, header_style="bold")
    for column in COLUMNS:
        table.add_column(column)
    for s in items:
        meta, status = s.get("metadata") or {}, s.get("status") or {}
        table.add_row(
            str(meta.get("name", "")),
            str((s.get("spec") or {}).get("replicas", 1)),
            str(status.get("readyReplicas", 0)),
            str(_condition(s, "InferenceSetReady").get("status", "")),
            age(meta.get("creationTimestamp")),
        )
    console.print(table)


def describe(kube: KubeClient, name: str, age: Any) -> None:
    client = sets(kube)
    obj = client.get(name)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    template = spec.get("template") or {}
    preset = ((template.get("inference") or {}).get("preset") or {}).get("name", "-")
    autoscaling = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("scaledobject.kaito.sh/")
    }
    print_fields(
        [
            ("Name", meta.get("name")),
            ("Namespace", meta.get("namespace")),
            ("Preset", preset),
            ("Instance", (template.get("resource") or {}).get("instanceType") or "(bring your own nodes)"),
            (
                "Replicas",
                f"{spec.get('replicas', 1)} wanted, {status.get('replicas', 0)} present, "
                f"{status.get('readyReplicas', 0)} ready",
            ),
            ("Node limit", spec.get("nodeCountLimit") or "none"),
            ("Service", f"{meta.get('name')} (port 80, ready replicas only)"),
            ("Autoscaling", ", ".join(f"{k.split('/', 1)[1]}={v}" for k, v in autoscaling.items()) or "off"),
            ("Age", age(meta.get("creationTimestamp"))),
        ]
    )
    print_conditions(status.get("conditions") or [])
    replicas = Table(title="Replicas", box=None, header_style="bold", title_justify="left")
    for column in ("WORKSPACE", "INFERENCEREADY", "REASON", "AGE"):
        replicas.add_column(column, overflow="fold")
    for ws in client.replicas(name):
        ready = _condition(ws, "InferenceReady")
        wmeta = ws.get("metadata") or {}
        replicas.add_row(
            str(wmeta.get("name")),
            str(ready.get("status", "")),
            str(ready.get("reason", "")),
            age(wmeta.get("creationTimestamp")),
        )
    console.print(replicas)
    print_events(kube.events_for(name, kind="InferenceSet"), age)


def delete(kube: KubeClient, name: str) -> None:
    sets(kube).delete(name)
    console.print(
        f'inferenceset.kaito.sh "{name}" deleted (the operator removes its replicas)', highlight=False
    )


def ready_replica(kube: KubeClient, name: str) -> str:
    """A ready replica Workspace to tunnel to (in the cluster the set's Service balances; a tunnel cannot)."""
    client = sets(kube)
    obj = client.get(name)
    for ws in client.replicas(name):
        if _condition(ws, "InferenceReady").get("status") == "True" and not (ws.get("metadata") or {}).get(
            "deletionTimestamp"
        ):
            return str(ws["metadata"]["name"])
    reason = not_ready_reason(obj) or "no replica is ready"
    raise ClusterError(
        f"inferenceset {name!r} has no ready replica: {reason}; `kaito describe is/{name}` shows more"
    )


def scale_command(
    name: Annotated[str, typer.Argument(help="The InferenceSet (NAME or is/NAME).")],
    replicas: Annotated[int, typer.Option("--replicas", help="Replicas wanted; 0 scales to zero.", min=0)],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace (default: the context's).")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")] = None,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="Path to the kubeconfig file.")
    ] = None,
) -> None:
    """Set an InferenceSet's replicas through its /scale subresource (as kubectl scale and KEDA do)."""
    from pykaito.client.kube import KubeClient

    target = set_target(name)
    set_name = target if target else name
    kube = KubeClient(kubeconfig=kubeconfig, context=context, namespace=namespace)
    scale = sets(kube).scale(set_name, replicas)
    before = (scale.get("status") or {}).get("replicas", "?")
    console.print(f"inferenceset.kaito.sh/{set_name} scaled to {replicas} (had {before})", highlight=False)


def sets_in(docs: Documents) -> list[InferenceSet]:
    from pykaito.api.setrules import sets_in as found

    return found(docs)


def apply(kube: KubeClient, found: list[InferenceSet], namespace: str | None) -> None:
    from pykaito.api.setrules import set_to_dict

    client = sets(kube)
    for inference_set in found:
        body = set_to_dict(inference_set)
        if namespace:
            body.setdefault("metadata", {})["namespace"] = namespace
        _, created = client.apply(body)
        console.print(
            f"inferenceset.kaito.sh/{inference_set.name} {'created' if created else 'configured'}",
            highlight=False,
        )


DEFAULT_SCALER_ADDRESS = "pykaito-scaler.kaito-system.svc:9090"  # the chart's defaults


def render_sets(
    docs: Documents, *, namespace: str | None, prometheus: str | None, gateway: str | None
) -> list[dict[str, Any]]:
    """What the operator makes of each InferenceSet in a file (validated first, offline)."""
    from pykaito.api.setrules import child_workspace, validate_sets_or_raise
    from pykaito.api.setrules import sets_in as found
    from pykaito.manifests.inferenceset import (
        MetricSource,
        autoscaling,
        http_route,
        inference_pool,
        render_children,
        scaled_object,
        set_service,
    )
    from pykaito.planner import plan

    def nodes(workspace: Any) -> int:
        return int(plan(workspace).node_count)

    items = found(docs)
    if namespace:
        items = [
            s
            if s.metadata.namespace
            else s.model_copy(update={"metadata": s.metadata.model_copy(update={"namespace": namespace})})
            for s in items
        ]
    validate_sets_or_raise(items, nodes_per_replica=nodes)
    source = MetricSource(prometheus_address=prometheus or "", external_scaler_address=DEFAULT_SCALER_ADDRESS)
    objects: list[dict[str, Any]] = []
    for s in items:
        objects += render_children(s)
        objects.append(set_service(s))
        try:
            per_replica: int | None = nodes(child_workspace(s, 0))
        except PykaitoError:
            per_replica = None
        scaling = autoscaling(s, per_replica)
        if scaling.enabled:
            objects.append(scaled_object(s, scaling, source))
        if gateway:
            objects += [inference_pool(s, f"{gateway}-epp"), http_route(s, gateway)]
    return objects


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("scale")(scale_command)
