"""kopf handlers for kaito.sh/v1beta1 Workspaces: thin shells over :mod:`pykaito.operator.reconcile`.

- create/update/resume: validate, plan, provision or find nodes, apply the children, report status;
- a timer and watches on the labelled children (StatefulSets, Pods, Services) keep the status true
  and restore children deleted or edited by hand;
- delete: release the NodeClaims, then kopf removes the ``workspace.finalizer.kaito.sh`` finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from pykaito.api.types import FINALIZER, GROUP, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, PLURAL, VERSION
from pykaito.errors import ClusterError
from pykaito.manifests.weight_cache import LABEL_WEIGHT_CACHE
from pykaito.operator import deletion, peering, reconcile, weightcache
from pykaito.operator import sethandlers as sethandlers  # registers the InferenceSet handlers
from pykaito.operator.children import owner_key
from pykaito.operator.kubeapi import WORKSPACES, KubeApi
from pykaito.operator.metrics import Metrics
from pykaito.operator.reconcile import Runtime
from pykaito.operator.settings import OperatorSettings, settings_from_env
from pykaito.operator.toolkit import default_toolkit

logger = logging.getLogger(__name__)

# kopf reads timer intervals when the handlers are declared, so settings are read at import.
SETTINGS = settings_from_env()
ANNOTATION_PREFIX = "kaito.sh"
CHILD_LABELS = {LABEL_WORKSPACE: kopf.PRESENT}


class KopfEvents:
    """Kubernetes Events on one Workspace, posted through kopf."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body: Any = dict(body)

    def info(self, reason: str, message: str) -> None:
        kopf.info(self._body, reason=reason, message=message)

    def warn(self, reason: str, message: str) -> None:
        kopf.warn(self._body, reason=reason, message=message)


def configure(settings: kopf.OperatorSettings, ops: OperatorSettings) -> None:
    """kopf's own settings: our finalizer name, annotations under kaito.sh, short API backoffs."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX)
    settings.posting.level = logging.INFO
    settings.posting.loggers = False  # Events are the operator's own steps (kopf.info/warn), not log lines
    cap = max(0.05, ops.error_backoff_seconds)
    settings.networking.error_backoffs = [min(cap, x) for x in (0.1, 0.3, 1.0, 2.0, 5.0, 10.0)]
    settings.networking.request_timeout = ops.api_timeout_seconds  # kopf's own calls: never hang
    settings.networking.connect_timeout = min(10.0, ops.api_timeout_seconds)
    settings.peering.lifetime = max(1, ops.peering_lifetime_seconds)  # used with --peering only
    if ops.webhook.enabled:
        settings.admission.server = kopf.WebhookServer(
            port=ops.webhook.port,
            addr=ops.webhook.addr,
            host=ops.webhook.host,
            certfile=ops.webhook.certfile,
            pkeyfile=ops.webhook.pkeyfile,
            cafile=ops.webhook.cafile,
            insecure=ops.webhook.insecure,
            # a renewed Secret (cert-manager, a new chart release) is served without a restart
            file_check_interval=max(0.1, ops.webhook.reload_seconds),
        )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ops = settings_from_env()
    configure(settings, ops)
    metrics = Metrics()
    metrics.serve(ops.metrics_port)
    memo.runtime = Runtime(
        kube=await KubeApi.connect(request_timeout=ops.api_timeout_seconds),
        settings=ops,
        toolkit=default_toolkit(),
        metrics=metrics,
        peering=peering.from_kopf(settings),  # with --peering, only the acting replica sweeps caches
    )
    if ops.weight_cache_enabled:
        ops.weight_cache_settings()  # a value that would not work stops the start, with a clear message
        memo.weight_cache_gc = asyncio.create_task(weightcache.collect_forever(memo.runtime))
    logger.info("pykaito operator started (node provisioning %s)", "on" if ops.node_provisioning else "off")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    gc: asyncio.Task[None] | None = getattr(memo, "weight_cache_gc", None)
    if gc is not None:
        gc.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gc
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is not None:
        rt.metrics.stop()
        await rt.kube.close()


def _runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo.runtime
    return rt


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_workspace(
    body: kopf.Body, old: Any, retry: int, reason: str, memo: kopf.Memo, **_: Any
) -> None:
    rt = _runtime(memo)
    try:
        state = await reconcile.converge(
            rt, body, KopfEvents(body), validate=True, old=old if reason == "update" else None, retry=retry
        )
    except ClusterError as exc:
        rt.metrics.errors.labels(handler="reconcile").inc()
        KopfEvents(body).warn("ClusterError", str(exc))
        raise kopf.TemporaryError(str(exc), delay=rt.settings.error_backoff_seconds) from exc
    except kopf.PermanentError:
        rt.metrics.errors.labels(handler="reconcile").inc()
        raise
    logger.info("reconciled workspace %s/%s: %s", body.metadata.namespace, body.metadata.name, state)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_workspace(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    try:
        await deletion.finalize(rt, body, KopfEvents(body))
    except ClusterError as exc:
        rt.metrics.errors.labels(handler="delete").inc()
        KopfEvents(body).warn("ClusterError", str(exc))
        raise kopf.TemporaryError(str(exc), delay=rt.settings.error_backoff_seconds) from exc


async def _refresh(rt: Runtime, body: Mapping[str, Any]) -> None:
    """Re-read the cluster for one Workspace: restore children, update status; never raises."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or reconcile.is_marked_invalid(body):
        return
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if key in rt.pending:  # one queued refresh reads the latest state for every change meanwhile
        return
    rt.pending.add(key)
    try:
        await reconcile.converge(rt, body, KopfEvents(body), validate=False, waiting_raises=False)
    except kopf.PermanentError as exc:  # marked invalid in its status; later refreshes skip it
        logger.warning("workspace %s/%s is invalid: %s", meta.get("namespace"), meta.get("name"), exc)
    except ClusterError as exc:
        rt.metrics.errors.labels(handler="refresh").inc()
        logger.warning("cannot refresh workspace %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
    finally:
        rt.pending.discard(key)


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _refresh(_runtime(memo), body)


@kopf.on.event("apps", "v1", "statefulsets", labels=CHILD_LABELS)
@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("v1", "services", labels=CHILD_LABELS)
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)  # the post-load benchmark Job
async def child_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A child or NodeClaim changed or went away: refresh its Workspace (restoring what is missing)."""
    if type is None:  # the initial listing: the Workspaces' resume handlers cover it
        return
    key = owner_key(body, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE)
    if key is None:
        return
    rt = _runtime(memo)
    try:
        workspace = await rt.kube.get(WORKSPACES, key[0], key[1])
    except ClusterError as exc:
        logger.warning("cannot read workspace %s/%s: %s", key[0], key[1], exc)
        return
    if workspace is not None:
        await _refresh(rt, workspace)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_WEIGHT_CACHE: kopf.PRESENT})
async def weight_cache_job_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A weight cache's download Job changed: refresh the Workspaces of its namespace that use it."""
    if type is None:
        return
    rt = _runtime(memo)
    name = str((body.metadata.labels or {}).get(LABEL_WEIGHT_CACHE))
    try:
        workspaces = await rt.kube.list(WORKSPACES, body.metadata.namespace)
    except ClusterError as exc:
        logger.warning("cannot list workspaces of %s: %s", body.metadata.namespace, exc)
        return
    for workspace in workspaces:
        if weightcache.uses(rt, workspace, name):
            await _refresh(rt, workspace)


if SETTINGS.node_provisioning:  # without it the operator has no NodeClaims (nor the right to watch them)
    kopf.on.event("karpenter.sh", "v1", "nodeclaims", labels=CHILD_LABELS)(child_changed)
