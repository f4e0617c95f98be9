"""A Workspace or InferenceSet as a `kaito bench` target: the tunnel of `kaito connect`, the plan's ceiling.

An InferenceSet (``is/NAME``, or a NAME no Workspace has) is measured through all its ready
replicas: each connection goes to the next replica's serving pod in turn, as the set's Service
spreads connections, so the figures are the set's, not one replica's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pykaito.cli.cluster_cmds import client, not_ready_reason
from pykaito.client.kube import KubeClient, NotFoundError
from pykaito.errors import ClusterError, PykaitoError


def decode_ceiling(ws: dict[str, Any]) -> float | None:
    """The plan's single-stream decode ceiling (tokens/s) for a Workspace object, if it plans."""
    from pykaito.api.loading import parse_workspace
    from pykaito.planner import plan

    body = {k: v for k, v in ws.items() if k != "status"}
    try:
        value = plan(parse_workspace(body)).decode_tokens_per_s
    except PykaitoError:
        return None
    return value if value > 0 else None


def ready_replicas(kube: KubeClient, name: str) -> list[str]:
    """The InferenceSet's replica Workspaces that are InferenceReady and not being deleted."""
    from pykaito.cli.set_cmds import sets

    names = []
    for ws in sets(kube).replicas(name):
        meta = ws.get("metadata") or {}
        conditions = (ws.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "InferenceReady" and c.get("status") == "True" for c in conditions)
        if ready and not meta.get("deletionTimestamp"):
            names.append(str(meta["name"]))
    return names


@contextlib.contextmanager
def workspace_endpoint(
    name: str, namespace: str | None, context: str | None, kubeconfig: str | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Tunnel to a Ready Workspace or InferenceSet on a free local port; yield the URL and its record."""
    from pykaito.cli.set_cmds import set_target, sets
    from pykaito.client.portforward import PortForward

    kube = client(namespace, context, kubeconfig)
    set_name = set_target(name)
    if set_name is None:
        try:
            ws = kube.get_workspace(name)
        except NotFoundError as exc:
            try:
                sets(kube).get(name)
            except NotFoundError:
                raise NotFoundError(f"{exc}; no inferenceset is named {name!r} either") from exc
            set_name = name
    if set_name is not None:
        with set_endpoint(kube, set_name) as found:
            yield found
        return
    reason = not_ready_reason(ws)
    if reason is not None:
        raise ClusterError(f"workspace {name!r} is not ready: {reason}; `kaito describe {name}` shows more")
    meta: dict[str, Any] = {"workspace": name}
    ceiling = decode_ceiling(ws)
    if ceiling:
        meta["plan_decode_tokens_per_s"] = round(ceiling, 1)
    forward = PortForward(kube, name, local_port=0)
    forward.check()
    with forward:
        yield forward.url, meta


@contextlib.contextmanager
def set_endpoint(kube: KubeClient, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Tunnel to every ready replica of an InferenceSet, a connection to each in turn."""
    from pykaito.cli.set_cmds import ready_replica
    from pykaito.client.portforward import ReplicaPortForward

    ready_replica(kube, name)  # a clear error when none is ready
    replicas = ready_replicas(kube, name)
    meta: dict[str, Any] = {"inferenceset": name, "replicas": replicas}
    ceiling = decode_ceiling(kube.get_workspace(replicas[0])) if replicas else None
    if ceiling:
        meta["plan_decode_tokens_per_s"] = round(ceiling, 1)
    forward = ReplicaPortForward(
        kube, f"inferenceset {name}", lambda: ready_replicas(kube, name), local_port=0
    )
    forward.check()
    with forward:
        yield forward.url, meta
