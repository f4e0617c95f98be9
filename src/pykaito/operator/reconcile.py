"""Reconciling one Workspace: validate, plan, provision or find nodes, apply children, report status.

Everything here is idempotent and finds objects by name, so it can run again at any point (after a
restart, on a timer, when a child changes) without creating duplicates. The decisions are made by
pure functions (conditions, children, the core in the toolkit); this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
import yaml

from pykaito.api.types import (
    CONFIG_KEY,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    ConditionType,
    State,
    Workspace,
)
from pykaito.catalog.nodes import node_labels, node_matches
from pykaito.errors import FieldError, PykaitoError
from pykaito.manifests import Images, NodeClassRef
from pykaito.operator import benchmark, weightcache
from pykaito.operator import conditions as cond
from pykaito.operator.children import claims_changed, drifted
from pykaito.operator.context import Events, Invalid, Runtime, is_marked_invalid, meta_of, parse
from pykaito.operator.kubeapi import (
    CONFIGMAPS,
    NODECLAIMS,
    NODES,
    PODS,
    SECRETS,
    STATEFULSETS,
    WORKSPACES,
    ApiError,
    Resource,
    resource_of,
)
from pykaito.operator.status import mark_invalid, report
from pykaito.operator.toolkit import LiveContext
from pykaito.planner.types import Plan

logger = logging.getLogger(__name__)
__all__ = ["Events", "Invalid", "Runtime", "converge", "is_marked_invalid", "live_context", "parse"]


async def live_context(rt: Runtime, workspace: Workspace) -> LiveContext:
    """Nodes (only for bring-your-own nodes), and the ConfigMap and Secret the Workspace names, as
    admission rules need them. Only the named objects are read (get, never list), and of a Secret
    only its key names are kept."""
    namespace = workspace.namespace
    inference = workspace.inference
    config_name = inference.config if inference else None
    options = inference.preset.presetOptions if inference and inference.preset else None
    secret_name = options.modelAccessSecret if options else None
    nodes, config_map, secret_keys = await asyncio.gather(
        _no_nodes() if provisioning(rt, workspace) else rt.kube.list(NODES),
        _get_named(rt, CONFIGMAPS, namespace, config_name),
        _secret_keys(rt, namespace, secret_name),
    )
    selector = workspace.resource.labelSelector if workspace.resource else None
    chosen = selector.model_dump(exclude_none=True) if selector is not None else None
    matched = [n for n in nodes if chosen is not None and node_matches(chosen, node_labels(n))]
    return LiveContext(
        nodes=matched or None,
        config_maps={config_name: dict(config_map.get("data") or {})} if config_name and config_map else {},
        secrets={secret_name: secret_keys} if secret_name and secret_keys is not None else {},
    )


async def _get_named(rt: Runtime, res: Resource, namespace: str, name: str | None) -> dict[str, Any] | None:
    return await rt.kube.get(res, namespace, name) if name else None


async def _secret_keys(rt: Runtime, namespace: str, name: str | None) -> set[str] | None:
    """The key names of one Secret (its values are dropped at once); None when it does not exist."""
    secret = await _get_named(rt, SECRETS, namespace, name)
    if secret is None:
        return None
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


async def _inference_config(
    rt: Runtime, workspace: Workspace
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The inference ConfigMap's data and its parsed inference_config.yaml (None, None without one)."""
    name = workspace.inference.config if workspace.inference else None
    if not name:
        return None, None
    config_map = await rt.kube.get(CONFIGMAPS, workspace.namespace, name)
    if config_map is None:
        raise Invalid(
            [FieldError("inference.config", f"ConfigMap {name!r} does not exist in {workspace.namespace}")],
            cond.Reason.INVALID,
        )
    data = dict(config_map.get("data") or {})
    try:
        parsed = yaml.safe_load(data.get(CONFIG_KEY) or "") or {}
    except yaml.YAMLError as exc:
        raise Invalid(
            [FieldError("inference.config", f"{CONFIG_KEY} is not valid YAML: {exc}")], cond.Reason.INVALID
        ) from exc
    return data, parsed if isinstance(parsed, dict) else {}


def images(rt: Runtime) -> Images | None:
    overrides = rt.settings.image_overrides()
    return Images().with_overrides(overrides) if overrides else None


async def _no_nodes() -> list[dict[str, Any]]:
    return []


def provisioning(rt: Runtime, workspace: Workspace) -> bool:
    return rt.settings.node_provisioning and bool(workspace.resource and workspace.resource.instanceType)


async def byo_nodes(rt: Runtime, workspace: Workspace) -> list[dict[str, Any]]:
    selector = workspace.resource.labelSelector if workspace.resource else None
    if selector is None:
        return []
    chosen = selector.model_dump(exclude_none=True)
    return [n for n in await rt.kube.list(NODES) if node_matches(chosen, node_labels(n))]


def make_plan(
    rt: Runtime, workspace: Workspace, nodes: list[dict[str, Any]] | None, config: dict[str, Any] | None
) -> Plan:
    try:
        labels = [node_labels(n) for n in nodes] if nodes is not None else None
        return rt.toolkit.plan(workspace, labels, config=config)
    except PykaitoError as exc:
        raise Invalid([FieldError("resource", str(exc))], cond.Reason.PLAN_FAILED) from exc


async def ensure_nodeclaims(
    rt: Runtime, workspace: Workspace, plan: Plan, events: Events
) -> list[dict[str, Any]] | None:
    """Create the missing NodeClaims (found by name); None when the NodeClaim resource is missing."""
    labels = {LABEL_WORKSPACE: workspace.name, LABEL_WORKSPACE_NAMESPACE: workspace.namespace}
    try:
        existing = {str(meta_of(c).get("name")): c for c in await rt.kube.list(NODECLAIMS, labels=labels)}
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    node_class = NodeClassRef(
        rt.settings.node_class_group, rt.settings.node_class_kind, rt.settings.node_class_name
    )
    result = []
    for claim in rt.toolkit.render_nodeclaims(workspace, plan, node_class):
        name = str(claim["metadata"]["name"])
        if name not in existing:
            try:
                existing[name] = await rt.kube.create(NODECLAIMS, claim)
                events.info("NodeClaimCreated", f"created NodeClaim {name} ({plan.instance_type})")
            except ApiError as exc:
                if not exc.conflict:
                    raise
                existing[name] = await rt.kube.get(NODECLAIMS, None, name) or claim
        result.append(existing[name])
    return result


async def observe(
    rt: Runtime,
    workspace: Workspace,
    plan: Plan,
    claims: list[dict[str, Any]] | None,
    *,
    crd_missing: bool = False,
) -> cond.Observed:
    namespace, labels = workspace.namespace, {LABEL_WORKSPACE: workspace.name}
    if claims is None and not crd_missing:
        nodes = await byo_nodes(rt, workspace)
    else:
        names = [str((c.get("status") or {}).get("nodeName") or "") for c in claims or []]
        found = await asyncio.gather(*(rt.kube.get(NODES, None, n) for n in names if n))
        nodes = [n for n in found if n is not None]
    statefulset, pods = await asyncio.gather(
        rt.kube.get(STATEFULSETS, namespace, workspace.name), rt.kube.list(PODS, namespace, labels=labels)
    )
    return cond.Observed(
        target_nodes=plan.total_nodes,
        nodeclaims=claims if claims is not None else ([] if crd_missing else None),
        nodes=nodes,
        statefulset=statefulset,
        pods=pods,
        needs_gpu=plan.gpus_per_node > 0,
        nodeclaim_crd_missing=crd_missing,
        gpu_resource=plan.gpu_resource,
    )


async def apply_children(rt: Runtime, objects: list[dict[str, Any]], events: Events) -> int:
    """Create what is missing and restore what drifted; returns how many objects were written."""
    written = 0
    for desired in objects:
        res, meta = resource_of(desired), desired["metadata"]
        namespace, name, kind = meta.get("namespace"), str(meta["name"]), desired.get("kind")
        live = await rt.kube.get(res, namespace, name)
        if live is None:
            try:
                await rt.kube.create(res, desired)
                events.info("ChildCreated", f"created {kind} {name}")
                written += 1
                continue
            except ApiError as exc:
                if not exc.conflict:
                    raise
                live = await rt.kube.get(res, namespace, name)
        if live is not None and claims_changed(desired, live):
            # volumeClaimTemplates cannot change in place: the StatefulSet is made again, its pods too
            await rt.kube.delete(res, namespace, name)
            await rt.kube.create(res, desired)
            events.info("ChildReplaced", f"replaced {kind} {name}: its volume claims changed")
            written += 1
            continue
        if live is not None and drifted(desired, live):
            await rt.kube.patch(res, namespace, name, desired)
            events.info("ChildRestored", f"restored {kind} {name} to its rendered state")
            written += 1
    return written


async def converge(
    rt: Runtime,
    body: Mapping[str, Any],
    events: Events,
    *,
    validate: bool,
    old: Mapping[str, Any] | None = None,
    retry: int = 0,
    waiting_raises: bool = True,
) -> State:
    """Bring one Workspace's children and status in line with its spec; see the module docstring.

    Raises kopf.PermanentError when the Workspace is invalid, kopf.TemporaryError while nodes come up
    (only when ``waiting_raises``).
    """
    meta = meta_of(body)
    started = time.perf_counter()
    try:
        key = (str(meta.get("namespace")), str(meta.get("name")))
        async with rt.lock(*key):
            rt.pending.discard(key)
            if not validate:  # a refresh: act on the latest version, and never on a deleted Workspace
                latest = await rt.kube.get(WORKSPACES, meta.get("namespace"), str(meta.get("name")))
                if latest is None or meta_of(latest).get("deletionTimestamp") or is_marked_invalid(latest):
                    return State(str((body.get("status") or {}).get("state") or State.PENDING))
                body = latest
            return await _converge(
                rt, body, events, validate=validate, old=old, retry=retry, waiting_raises=waiting_raises
            )
    finally:
        rt.metrics.reconcile_seconds.observe(time.perf_counter() - started)


async def _converge(
    rt: Runtime,
    body: Mapping[str, Any],
    events: Events,
    *,
    validate: bool,
    old: Mapping[str, Any] | None,
    retry: int,
    waiting_raises: bool,
) -> State:
    try:
        workspace = parse(body)
        provision = provisioning(rt, workspace)
        nodes = None if provision else await byo_nodes(rt, workspace)
        if validate:
            errors = rt.toolkit.validate(
                workspace, _previous(rt, body, old), await live_context(rt, workspace)
            )
            if errors:
                raise Invalid(errors, cond.Reason.INVALID)
            rt.accepted[(workspace.namespace, workspace.name)] = workspace
        config_data, config = await _inference_config(rt, workspace)
        if nodes == []:
            return await _wait_for_byo_nodes(rt, body, workspace, events, retry, waiting_raises)
        plan = make_plan(rt, workspace, nodes, config)
    except Invalid as problem:
        await mark_invalid(rt, body, problem, events)
        raise kopf.PermanentError(str(problem)) from problem

    status = body.get("status") or {}
    extra: dict[str, Any] = {"targetNodeCount": status.get("targetNodeCount") or plan.total_nodes}
    if "targetNodeCount" not in status:
        events.info(
            "Planned",
            f"{plan.node_count} node(s) x {plan.gpus_per_node} GPU, max-model-len {plan.max_model_len}",
        )
        for note in plan.notes:  # asked for one thing, planned another: say so where users look
            events.warn("PlanAdjusted", note)
    claims: list[dict[str, Any]] | None = None
    crd_missing = False
    if provision:
        claims = await ensure_nodeclaims(rt, workspace, plan, events)
        crd_missing = claims is None
    # the weights download while the nodes come up; the pods start once both are ready
    cache = await weightcache.ensure(rt, workspace, plan, events, images(rt))
    seen = await observe(rt, workspace, plan, claims, crd_missing=crd_missing)
    extra["workerNodes"] = sorted(str(meta_of(n).get("name")) for n in seen.nodes)
    verdicts = cond.conditions_from(seen)
    resource = cond.verdict_of(verdicts, ConditionType.RESOURCE_READY)
    resource_ok = resource.ok
    # a shared cache is filled before the pods start; a pod's own (ReadWriteOnce) by the pod itself
    cache_ready = cache is None or cache.ready or cache.cache.per_pod
    if (
        resource_ok
        and cache_ready
        and await apply_children(
            rt,
            rt.toolkit.render(
                workspace, plan, config_data, images(rt), weight_cache=cache.cache if cache else None
            ),
            events,
        )
    ):
        seen = await observe(rt, workspace, plan, claims, crd_missing=crd_missing)
        verdicts = cond.conditions_from(seen)
    state = await report(rt, body, weightcache.with_cache(verdicts, cache), events, extra)
    await benchmark.sync(rt, body, workspace, state, events, images(rt))
    if not resource_ok and waiting_raises:
        delay = rt.settings.wait_max_seconds if crd_missing else rt.settings.wait_delay(retry)
        raise kopf.TemporaryError(f"waiting for nodes: {resource.message}", delay=delay)
    if cache is not None and not cache.ready and not cache.failed and waiting_raises:
        raise kopf.TemporaryError(
            f"waiting for the weights: {cache.message}", delay=rt.settings.wait_delay(retry)
        )
    return state


def _previous(rt: Runtime, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> Workspace | None:
    """What an update is checked against: the last version this operator accepted (a refused change
    must not become the reference), else the version kopf last handled; None on create and resume."""
    if not old:
        return None
    meta = meta_of(body)
    accepted = rt.accepted.get((str(meta.get("namespace")), str(meta.get("name"))))
    if accepted is not None:
        return accepted
    try:
        return parse({**old, "metadata": {**(old.get("metadata") or {}), **meta}})
    except Invalid:
        return None


async def _wait_for_byo_nodes(
    rt: Runtime,
    body: Mapping[str, Any],
    workspace: Workspace,
    events: Events,
    retry: int,
    waiting_raises: bool,
) -> State:
    """Bring-your-own nodes, none labelled yet: report it and wait (nodes may be labelled later)."""
    selector = workspace.resource.labelSelector if workspace.resource else None
    wanted = selector.model_dump(exclude_none=True) if selector is not None else {}
    message = f"no node matches resource.labelSelector {wanted}: "
    message += "label the nodes to use, or set resource.instanceType"
    seen = cond.Observed(target_nodes=1, nodeclaims=None, nodes=[], statefulset=None, pods=[])
    verdicts = [
        v
        if v.type is not ConditionType.NODES_READY
        else cond.Verdict(v.type, False, cond.Reason.NODE_NOT_READY, message)
        for v in cond.conditions_from(seen)
    ]
    waiting = cond.Verdict(ConditionType.RESOURCE_READY, False, cond.Reason.NODE_NOT_READY, message)
    verdicts = [
        waiting
        if v.type is ConditionType.RESOURCE_READY
        else cond.succeeded_verdict(waiting)
        if v.type is ConditionType.WORKSPACE_SUCCEEDED
        else v
        for v in verdicts
    ]
    state = await report(rt, body, verdicts, events)
    if waiting_raises:
        raise kopf.TemporaryError(f"waiting for nodes: {message}", delay=rt.settings.wait_delay(retry))
    return state
