"""Deleting a Workspace: mark it, release its NodeClaims, then kopf removes the finalizer.

A cluster without the NodeClaim resource (no provisioner installed) has nothing to release: the
404 on the resource is reported and deletion goes on, so such Workspaces never get stuck. Neither has
an operator with node provisioning off (its chart grants no access to NodeClaims).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from pykaito.api.types import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, ConditionType
from pykaito.operator import conditions as cond
from pykaito.operator import weightcache
from pykaito.operator.context import Events, Runtime, meta_of
from pykaito.operator.kubeapi import NODECLAIMS, ApiError
from pykaito.operator.status import now, write_status


async def finalize(rt: Runtime, body: Mapping[str, Any], events: Events) -> None:
    """On deletion: mark WorkspaceDeleting, delete the NodeClaims, wait until they are gone."""
    meta = meta_of(body)
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    async with rt.lock(namespace, name):
        await _finalize(rt, body, events)
    rt.locks.pop((namespace, name), None)
    rt.accepted.pop((namespace, name), None)


async def _finalize(rt: Runtime, body: Mapping[str, Any], events: Events) -> None:
    meta = meta_of(body)
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    status = dict(body.get("status") or {})
    deleting = cond.Verdict(
        ConditionType.WORKSPACE_DELETING, True, cond.Reason.DELETING, "deleting the workspace"
    )
    conditions = cond.merge_conditions(
        status.get("conditions"), [deleting], now=now(), generation=meta.get("generation")
    )
    if not cond.same_conditions(status.get("conditions"), conditions):
        await write_status(rt, body, {"conditions": conditions})
    rt.metrics.forget(namespace, name)
    if rt.settings.weight_cache_enabled:
        released = await weightcache.release_pod_caches(rt, namespace, name)
        if released:
            events.info("WeightCacheDeleted", f"deleting the pods' own weight caches: {', '.join(released)}")
    if not rt.settings.node_provisioning:  # nothing was provisioned (nor may NodeClaims be read)
        return
    labels = {LABEL_WORKSPACE: name, LABEL_WORKSPACE_NAMESPACE: namespace}
    try:
        claims = await rt.kube.list(NODECLAIMS, labels=labels)
    except ApiError as exc:
        if not exc.not_found:
            raise
        events.info("NodeClaimsSkipped", "the NodeClaim resource is not installed: no nodes to release")
        claims = []
    pending = [c for c in claims if not meta_of(c).get("deletionTimestamp")]
    for claim in pending:
        await rt.kube.delete(NODECLAIMS, None, str(meta_of(claim).get("name")))
    if pending:
        events.info("NodeClaimsDeleted", f"deleting {len(pending)} NodeClaim(s)")
    if claims:
        remaining = await rt.kube.list(NODECLAIMS, labels=labels)
        if remaining:
            raise kopf.TemporaryError(
                f"waiting for {len(remaining)} NodeClaim(s) to be removed",
                delay=rt.settings.wait_initial_seconds,
            )
