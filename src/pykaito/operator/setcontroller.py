"""Reconciling one InferenceSet: child Workspaces, the set's Service, the ScaledObject, status.

The decisions are made by :mod:`pykaito.operator.setdecide`; objects by
:mod:`pykaito.manifests.inferenceset`. This module only reads and writes the API. Optional
integrations (KEDA, the Gateway API inference extension) are configured by environment variables the
chart sets; a missing CRD is reported in a condition, never retried in a loop.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pykaito.api.inferenceset import IS_PLURAL, IS_VERSION, LABEL_CREATED_BY, InferenceSet, SetConditionType
from pykaito.api.setrules import parse_set, validate_set
from pykaito.api.types import GROUP, Workspace
from pykaito.errors import PykaitoError, ValidationError
from pykaito.manifests.inferenceset import (
    MetricSource,
    autoscaling,
    http_route,
    inference_pool,
    render_child,
    scaled_object,
    set_service,
    template_hash,
)
from pykaito.operator.children import drifted
from pykaito.operator.conditions import Verdict, merge_conditions
from pykaito.operator.context import Events, Runtime, meta_of
from pykaito.operator.kubeapi import SERVICES, WORKSPACES, ApiError, Resource
from pykaito.operator.setdecide import child_of, decide, set_status
from pykaito.operator.status import now

logger = logging.getLogger(__name__)

INFERENCESETS = Resource(GROUP, IS_VERSION, IS_PLURAL)
SCALEDOBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects")
INFERENCEPOOLS = Resource("inference.networking.k8s.io", "v1", "inferencepools")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
AUTOSCALING_CONDITION = "AutoscalingReady"
ROUTING_CONDITION = "GatewayRoutingReady"


@dataclass(frozen=True)
class SetSettings:
    """What the chart configures for InferenceSets (environment variables of the operator)."""

    source: MetricSource
    gateway: str = ""  # the Gateway an HTTPRoute attaches to; empty: no inference extension objects
    endpoint_picker: str = ""


def set_settings_from_env(env: Mapping[str, str] | None = None) -> SetSettings:
    e = os.environ if env is None else env
    return SetSettings(
        source=MetricSource(
            prometheus_address=e.get("KAITO_OPERATOR_PROMETHEUS_ADDRESS", ""),
            external_scaler_address=e.get("KAITO_OPERATOR_EXTERNAL_SCALER_ADDRESS", ""),
            external_scaler_ca_secret=e.get("KAITO_OPERATOR_EXTERNAL_SCALER_CA_SECRET", ""),
        ),
        gateway=e.get("KAITO_OPERATOR_INFERENCE_GATEWAY", ""),
        endpoint_picker=e.get("KAITO_OPERATOR_ENDPOINT_PICKER", ""),
    )


def parse(body: Mapping[str, Any]) -> InferenceSet:
    raw = copy.deepcopy(dict(body))
    raw.pop("status", None)
    return parse_set(raw, source=f"inferenceset {meta_of(body).get('name')}")


def nodes_per_replica(rt: Runtime) -> Any:
    def count(workspace: Workspace) -> int:
        return int(rt.toolkit.plan(workspace, None).node_count)

    return count


async def _apply(rt: Runtime, res: Resource, desired: dict[str, Any]) -> None:
    meta = desired["metadata"]
    live = await rt.kube.get(res, meta.get("namespace"), meta["name"])
    if live is None:
        await rt.kube.create(res, desired)
    elif drifted(desired, live):
        await rt.kube.patch(res, meta.get("namespace"), meta["name"], desired)


async def _optional(rt: Runtime, res: Resource, desired: dict[str, Any], what: str) -> tuple[str, str, str]:
    """Apply an object of an optional CRD: (status, reason, message) for its condition."""
    try:
        await _apply(rt, res, desired)
    except ApiError as exc:
        if exc.not_found:
            return (
                "False",
                "CRDMissing",
                f"{what} is not installed ({res.group}/{res.version} {res.plural}): install it",
            )
        raise
    return "True", "Applied", f"{desired['kind']} {desired['metadata']['name']} applied"


def queue_key(namespace: str, name: str) -> tuple[str, str]:
    return (f"inferenceset:{namespace}", name)


async def converge_set(rt: Runtime, body: Mapping[str, Any], events: Events, settings: SetSettings) -> str:
    """One pass: validate, create/delete children, apply Service (and ScaledObject, pool, route), report.

    Passes for one set run one at a time; a pass waiting its turn is marked in ``rt.pending`` until
    it starts, so that a burst of replica changes queues one pass (it reads the children afresh).
    """
    meta = meta_of(body)
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    key = queue_key(namespace, name)
    async with rt.lock(*key):
        rt.pending.discard(key)
        try:
            inference_set = parse(body)
            errors = validate_set(inference_set, None, None, nodes_per_replica(rt))
        except ValidationError as exc:
            errors = exc.errors
        if errors:
            message = "; ".join(str(e) for e in errors)
            await _write_status(
                rt, body, None, [(SetConditionType.READY, "False", "InvalidInferenceSet", message)]
            )
            events.warn("InvalidInferenceSet", message)
            return "invalid"
        want_hash = template_hash(inference_set)
        listed = await rt.kube.list(WORKSPACES, namespace, labels={LABEL_CREATED_BY: name})
        children = [c for c in (child_of(o, name, want_hash) for o in listed) if c is not None]
        decision = decide(children, inference_set.replicas, inference_set.max_unavailable())
        for child_name in decision.delete:
            await rt.kube.delete(WORKSPACES, namespace, child_name)
            events.info("ReplicaDeleted", f"deleted replica Workspace {child_name}")
        for index in decision.create:
            child = render_child(inference_set, index)
            try:
                await rt.kube.create(WORKSPACES, child)
            except ApiError as exc:
                if not exc.conflict:
                    raise
            events.info("ReplicaCreated", f"created replica Workspace {child['metadata']['name']}")
        await _apply(rt, SERVICES, set_service(inference_set))

        extra: list[tuple[str, str, str, str]] = []
        scaling = autoscaling(inference_set, _safe_nodes(rt, inference_set))
        activation = ""
        if scaling.enabled:
            activation = (
                f"KEDA activates the set when {scaling.metric_name} is above {scaling.activation_threshold:g}"
            )
            if not (settings.source.prometheus_address or settings.source.external_scaler_address):
                extra.append(
                    (
                        AUTOSCALING_CONDITION,
                        "False",
                        "NoMetricSource",
                        "no Prometheus address or external scaler address is configured in the chart",
                    )
                )
            else:
                ok, reason, message = await _optional(
                    rt, SCALEDOBJECTS, scaled_object(inference_set, scaling, settings.source), "KEDA"
                )
                if ok == "True":
                    message += f" (replicas {scaling.min_replicas}..{scaling.max_replicas}"
                    message += ", capped by nodeCountLimit)" if scaling.capped_by_node_limit else ")"
                extra.append((AUTOSCALING_CONDITION, ok, reason, message))
        if settings.gateway:
            ok, reason, message = await _optional(
                rt,
                INFERENCEPOOLS,
                inference_pool(inference_set, settings.endpoint_picker),
                "the inference extension",
            )
            if ok == "True":
                ok, reason, message = await _optional(
                    rt, HTTPROUTES, http_route(inference_set, settings.gateway), "the Gateway API"
                )
            extra.append((ROUTING_CONDITION, ok, reason, message))

        if decision.create or decision.delete:
            listed = await rt.kube.list(WORKSPACES, namespace, labels={LABEL_CREATED_BY: name})
            children = [c for c in (child_of(o, name, want_hash) for o in listed) if c is not None]
        summary = set_status(children, inference_set.replicas, set_name=name, activation=activation)
        await _write_status(rt, body, summary, summary.conditions + extra)
        return f"{summary.ready}/{inference_set.replicas} ready"


def _safe_nodes(rt: Runtime, inference_set: InferenceSet) -> int | None:
    from pykaito.api.setrules import child_workspace

    try:
        return int(rt.toolkit.plan(child_workspace(inference_set, 0), None).node_count)
    except PykaitoError:
        return None


async def _write_status(
    rt: Runtime, body: Mapping[str, Any], status: Any, conditions: list[tuple[str, str, str, str]]
) -> None:
    meta = meta_of(body)
    name = str(meta.get("name"))
    old = (body.get("status") or {}).get("conditions")
    verdicts = [Verdict(type=t, ok=s == "True", reason=r, message=m) for t, s, r, m in conditions]  # type: ignore[arg-type]
    merged = merge_conditions(old, verdicts, now=now(), generation=meta.get("generation"))
    new: dict[str, Any] = {"conditions": merged, "selector": f"{LABEL_CREATED_BY}={name}"}
    if status is not None:
        new["replicas"] = status.replicas
        new["readyReplicas"] = status.ready
        new["updatedReplicas"] = status.updated
    current = dict(body.get("status") or {})
    if all(current.get(k) == v for k, v in new.items() if k != "conditions") and _same(old, merged):
        return
    await rt.kube.patch(INFERENCESETS, meta.get("namespace"), name, {"status": new}, subresource="status")


def _same(a: Any, b: Any) -> bool:
    def key(conds: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds or []
        )

    return key(a) == key(b)


async def delete_set(rt: Runtime, body: Mapping[str, Any], events: Events, settings: SetSettings) -> int:
    """Delete every child Workspace (their own finalizers release nodes); the count still present."""
    meta = meta_of(body)
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    listed = await rt.kube.list(WORKSPACES, namespace, labels={LABEL_CREATED_BY: name})
    for obj in listed:
        if not meta_of(obj).get("deletionTimestamp"):
            await rt.kube.delete(WORKSPACES, namespace, str(meta_of(obj).get("name")))
    owned = [SERVICES]
    if settings.source.prometheus_address or settings.source.external_scaler_address:
        owned.append(SCALEDOBJECTS)  # KEDA is configured (the chart grants these verbs only then)
    if settings.gateway:
        owned += [INFERENCEPOOLS, HTTPROUTES]
    for res in owned:
        try:
            live = await rt.kube.get(res, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                continue
            raise
        if live is not None and (meta_of(live).get("labels") or {}).get(LABEL_CREATED_BY) == name:
            await rt.kube.delete(res, namespace, name)
    if listed:
        events.info("DeletingReplicas", f"deleting {len(listed)} replica Workspace(s)")
    return len(listed)
