"""kopf handlers for kaito.sh InferenceSets: thin shells over :mod:`pykaito.operator.setcontroller`.

- create/update/resume and a timer: converge the set (children, Service, ScaledObject, status);
- a child Workspace changed: converge its set (a replica became ready, failed or went away);
- delete: delete the child Workspaces and the set's objects, then kopf removes the finalizer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import grpc
import kopf

from pykaito.api.inferenceset import IS_PLURAL, IS_VERSION, LABEL_CREATED_BY
from pykaito.api.types import GROUP, PLURAL, VERSION
from pykaito.errors import ClusterError
from pykaito.operator.context import Runtime
from pykaito.operator.externalscaler import Scaler, pod_finder, start_server
from pykaito.operator.kubeapi import KubeApi
from pykaito.operator.setcontroller import (
    INFERENCESETS,
    converge_set,
    delete_set,
    queue_key,
    set_settings_from_env,
)
from pykaito.operator.settings import settings_from_env

logger = logging.getLogger(__name__)
RESYNC_SECONDS = settings_from_env().resync_seconds  # kopf reads timer intervals at import


class _SetEvents:
    def __init__(self, body: Any) -> None:
        self._body: Any = dict(body)

    def info(self, reason: str, message: str) -> None:
        kopf.info(self._body, reason=reason, message=message)

    def warn(self, reason: str, message: str) -> None:
        kopf.warn(self._body, reason=reason, message=message)


def _runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo.runtime
    return rt


async def _converge(rt: Runtime, body: Any) -> str:
    try:
        return await converge_set(rt, body, _SetEvents(body), set_settings_from_env())
    except ClusterError as exc:
        rt.metrics.errors.labels(handler="inferenceset").inc()
        raise kopf.TemporaryError(str(exc), delay=rt.settings.error_backoff_seconds) from exc


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@kopf.on.startup()
async def start_external_scaler(memo: kopf.Memo, **_: Any) -> None:
    """Serve KEDA's external-scaler protocol when the chart gives it a port (KEDA without Prometheus)."""
    port = int(os.environ.get("KAITO_OPERATOR_EXTERNAL_SCALER_PORT") or 0)
    if not port:
        return
    certfile = os.environ.get("KAITO_OPERATOR_EXTERNAL_SCALER_CERTFILE", "")
    keyfile = os.environ.get("KAITO_OPERATOR_EXTERNAL_SCALER_KEYFILE", "")
    credentials = None
    if certfile and keyfile:
        pair = (await asyncio.to_thread(_read, keyfile), await asyncio.to_thread(_read, certfile))
        credentials = grpc.ssl_server_credentials([pair])
    kube = await KubeApi.connect()
    server, bound = await start_server(Scaler(pod_finder(kube)), port, credentials=credentials)
    memo.external_scaler = (server, kube)
    logger.info(
        "KEDA external scaler listening on port %d (%s)", bound, "TLS" if credentials else "plain gRPC"
    )


@kopf.on.cleanup()
async def stop_external_scaler(memo: kopf.Memo, **_: Any) -> None:
    running = getattr(memo, "external_scaler", None)
    if running is not None:
        server, kube = running
        await server.stop(grace=1.0)
        await kube.close()


@kopf.on.resume(GROUP, IS_VERSION, IS_PLURAL)
@kopf.on.create(GROUP, IS_VERSION, IS_PLURAL)
@kopf.on.update(GROUP, IS_VERSION, IS_PLURAL)
async def reconcile_inferenceset(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    state = await _converge(_runtime(memo), body)
    logger.info("reconciled inferenceset %s/%s: %s", body.metadata.namespace, body.metadata.name, state)


@kopf.timer(GROUP, IS_VERSION, IS_PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync_inferenceset(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if body.metadata.get("deletionTimestamp"):
        return
    try:
        await _converge(_runtime(memo), body)
    except kopf.TemporaryError as exc:
        logger.warning("cannot refresh inferenceset %s: %s", body.metadata.name, exc)


@kopf.on.event(GROUP, VERSION, PLURAL, labels={LABEL_CREATED_BY: kopf.PRESENT})
async def replica_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A replica Workspace changed or went away: converge the set that owns it."""
    if type is None:
        return
    name = str((body.metadata.labels or {}).get(LABEL_CREATED_BY))
    namespace = str(body.metadata.namespace)
    rt = _runtime(memo)
    key = queue_key(namespace, name)
    if key in rt.pending:  # a pass is already queued; it will read this change too
        return
    rt.pending.add(key)
    try:
        owner = await rt.kube.get(INFERENCESETS, namespace, name)
    except ClusterError as exc:
        rt.pending.discard(key)
        logger.warning("cannot read inferenceset %s/%s: %s", namespace, name, exc)
        return
    if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
        rt.pending.discard(key)
        return
    try:
        await converge_set(rt, owner, _SetEvents(owner), set_settings_from_env())
    except ClusterError as exc:
        logger.warning("cannot converge inferenceset %s/%s: %s", namespace, name, exc)


@kopf.on.delete(GROUP, IS_VERSION, IS_PLURAL)
async def delete_inferenceset(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    try:
        remaining = await delete_set(rt, body, _SetEvents(body), set_settings_from_env())
    except ClusterError as exc:
        raise kopf.TemporaryError(str(exc), delay=rt.settings.error_backoff_seconds) from exc
    if remaining:
        raise kopf.TemporaryError(f"waiting for {remaining} replica Workspace(s) to go", delay=0.5)
