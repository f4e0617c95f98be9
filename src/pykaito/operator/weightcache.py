"""The weight cache in the operator: fill a PVC once per model revision, then let the pods start.

With ``weightCache.enabled`` (``KAITO_OPERATOR_WEIGHT_CACHE_ENABLED``), a Workspace whose engine
would download its weights at start (:func:`pykaito.manifests.weight_cache.cache_for`) gets its
cache's PVC and download Job before anything else; its StatefulSet is applied only once the cache
is ready. The ``ModelMirrorReady`` condition (upstream's name) follows the download: its progress
(read from the download pod's log), then ``ModelMirrorReady`` True, or False with the download's
reason (``DownloadUnauthorized``, ``DownloadNotFound``, ``DownloadDiskFull``, ...). While it is not
ready ResourceReady says ``ModelMirrorNotReady``, as upstream.

A cache is ready when its PVC carries ``kaito.sh/weight-cache-state: Ready``; the operator writes
that when the Job succeeds, so a second Workspace on the same model and revision starts at once,
and the Job may be deleted. A cache no Workspace of its namespace uses is marked unused
(``kaito.sh/weight-cache-unused-since``) by a periodic sweep and deleted, with its Job, once the
grace period (``weightCache.gcGracePeriod``) has passed. Under kopf peering every replica runs
the sweep's task, but only the acting one (:mod:`pykaito.operator.peering`) changes anything.

With ``weightCache.accessMode: ReadWriteOnce`` there is no shared PVC nor Job: each inference pod
fills its own volume in an init container (:mod:`pykaito.manifests.weight_cache`), the StatefulSet
is applied at once, and ModelMirrorReady counts the pods whose init container has finished; a
refused download is reported from the init container's termination message. A deleted
Workspace's own volumes are removed with it (:func:`release_pod_caches`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pykaito.api.types import LABEL_WORKSPACE, ConditionType, Workspace
from pykaito.errors import ClusterError, PykaitoError
from pykaito.manifests import Images
from pykaito.manifests.weight_cache import (
    ANNOTATION_COMMIT,
    ANNOTATION_STATE,
    ANNOTATION_UNUSED_SINCE,
    DEFAULT_REVISION,
    DOWNLOAD_CONTAINER,
    INIT_CONTAINER,
    LABEL_POD_CACHE,
    LABEL_WEIGHT_CACHE,
    STATE_READY,
    WeightCache,
    cache_for,
    cache_name,
    download_job_name,
    render_download_job,
    render_pvc,
)
from pykaito.operator import conditions as cond
from pykaito.operator.benchmark import JOBS, job_outcome, termination_message
from pykaito.operator.context import Events, Invalid, Runtime, meta_of, parse
from pykaito.operator.kubeapi import PODS, WORKSPACES, ApiError, Resource
from pykaito.operator.peering import is_acting
from pykaito.operator.setcontroller import INFERENCESETS
from pykaito.planner.types import Plan

logger = logging.getLogger(__name__)

PVCS = Resource("", "v1", "persistentvolumeclaims")
MODEL_MIRROR_READY = ConditionType.MODEL_MIRROR_READY
REASON_READY = "ModelMirrorReady"
REASON_PENDING = "ModelMirrorPending"
REASON_NOT_READY = "ModelMirrorNotReady"
REASON_FAILED = "DownloadFailed"
GIB = 1024**3


@dataclass(frozen=True)
class CacheState:
    """Where one Workspace's cache stands."""

    cache: WeightCache
    ready: bool
    failed: bool
    reason: str
    message: str


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return meta_of(obj).get("annotations") or {}


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


async def ensure(
    rt: Runtime, workspace: Workspace, plan: Plan, events: Events, images: Images | None
) -> CacheState | None:
    """Create the cache's PVC and Job when missing and say where the download stands; None when the
    Workspace needs no cache (or the cache is off)."""
    if not rt.settings.weight_cache_enabled:
        return None
    settings = rt.settings.weight_cache_settings()
    cache = cache_for(workspace, plan, settings)
    if cache is None:
        return None
    if cache.per_pod:
        return await _per_pod(rt, cache, workspace, plan)
    pvc = await rt.kube.get(PVCS, cache.namespace, cache.name)
    if pvc is None:
        pvc = await _create(rt, PVCS, render_pvc(cache, settings), cache.namespace, cache.name)
        events.info(
            "WeightCacheCreated",
            f"created PersistentVolumeClaim {cache.name} ({settings.size or f'{cache.size_gib}Gi'}) "
            f"for the weights of {cache.model_id} at {cache.revision}",
        )
    what = f"{cache.model_id} at {cache.revision}"
    if _annotations(pvc).get(ANNOTATION_STATE) == STATE_READY:
        return _ready(cache, pvc)
    job = await rt.kube.get(JOBS, cache.namespace, cache.job_name)
    if job is not None and _created(job) < _created(pvc):  # it filled a PVC since deleted by hand
        await rt.kube.delete(JOBS, cache.namespace, cache.job_name)
        return _pending(cache, f"the download Job {cache.job_name} predates its PVC; it is being replaced")
    if job is None:
        await _create(
            rt, JOBS, render_download_job(cache, workspace, images, settings), cache.namespace, cache.job_name
        )
        events.info(
            "WeightDownloadStarted", f"started Job {cache.job_name} to download {what} into {cache.name}"
        )
        return _pending(cache, f"the download Job {cache.job_name} of {what} has started")
    outcome = job_outcome(job)
    pods = await rt.kube.list(PODS, cache.namespace, labels={LABEL_WEIGHT_CACHE: cache.name})
    if outcome == "succeeded":
        result = _result(termination_message(pods))
        annotations = {ANNOTATION_STATE: STATE_READY, ANNOTATION_COMMIT: str(result.get("commit") or "")}
        pvc = await rt.kube.patch(
            PVCS, cache.namespace, cache.name, {"metadata": {"annotations": annotations}}
        )
        size = result.get("bytes")
        detail = f" ({_gib(float(size))})" if isinstance(size, int | float) else ""
        events.info("WeightDownloadSucceeded", f"downloaded {what}{detail} into {cache.name}")
        return _ready(cache, pvc)
    if outcome == "failed":
        reason, message = _failure(cache, job, pods)
        return CacheState(cache, False, True, reason, message)
    return _pending(cache, await _progress(rt, cache, pods, pvc))


async def _create(
    rt: Runtime, res: Resource, obj: dict[str, Any], namespace: str, name: str
) -> dict[str, Any]:
    try:
        return await rt.kube.create(res, obj)
    except ApiError as exc:
        if not exc.conflict:
            raise
        return await rt.kube.get(res, namespace, name) or obj


def _created(obj: Mapping[str, Any]) -> str:
    """The creation time as the API writes it (RFC 3339 in UTC, so text order is time order)."""
    return str(meta_of(obj).get("creationTimestamp") or "")


def _ready(cache: WeightCache, pvc: Mapping[str, Any]) -> CacheState:
    commit = str(_annotations(pvc).get(ANNOTATION_COMMIT) or "")
    at = f"{cache.revision} (commit {commit[:12]})" if commit else cache.revision
    message = f"the weights of {cache.model_id} at {at} are in PersistentVolumeClaim {cache.name}"
    return CacheState(cache, True, False, REASON_READY, message)


def _pending(cache: WeightCache, message: str) -> CacheState:
    return CacheState(cache, False, False, REASON_PENDING, message)


def _result(message: str) -> dict[str, Any]:
    """The downloader's result JSON (its last line), or {} when it left none."""
    for line in reversed(message.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "ok" in data:
            return data
    return {}


def _failure(
    cache: WeightCache, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> tuple[str, str]:
    """The failure's reason and a message saying what to do (the download's own reason first)."""
    result = _result(termination_message([dict(p) for p in pods]))
    retry = f"then delete Job {cache.job_name} (namespace {cache.namespace}) to download again"
    what = f"downloading {cache.model_id} at {cache.revision} into {cache.name} failed"
    if result.get("ok") is False and result.get("reason"):
        why = str(result.get("message") or "")
        return f"Download{result['reason']}", f"{what}: {why}; fix that, {retry}"
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            return "DownloadEvicted", f"{what}: its pod was evicted ({status.get('message') or ''}); {retry}"
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                return "DownloadOOMKilled", f"{what}: the downloader ran out of memory; {retry}"
    why = next(
        (
            str(c.get("message") or c.get("reason") or "")
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        "",
    )
    return REASON_FAILED, f"{what}: {why or 'the Job failed without a message'}; {retry}"


def waiting_message(cache: WeightCache, pvc: Mapping[str, Any]) -> str:
    """Why the download has not started; a PVC still Pending is named (its class may not offer the
    access mode asked for)."""
    message = f"waiting for the download Job {cache.job_name} to start ({cache.model_id} at {cache.revision})"
    spec, phase = pvc.get("spec") or {}, (pvc.get("status") or {}).get("phase")
    if phase == "Pending":
        modes = ", ".join(spec.get("accessModes") or [])
        storage_class = spec.get("storageClassName") or "the default class"
        message += (
            f"; PersistentVolumeClaim {cache.name} is Pending: check that {storage_class} offers {modes} "
            "(chart values weightCache.storageClass and weightCache.accessMode)"
        )
    return message


async def _progress(
    rt: Runtime, cache: WeightCache, pods: Sequence[Mapping[str, Any]], pvc: Mapping[str, Any]
) -> str:
    """``downloading ...: 1.20 GiB of 7.15 GiB (17%)`` from the running pod's last progress line."""
    what = f"{cache.model_id} at {cache.revision} into {cache.name}"
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return waiting_message(cache, pvc)
    name = str(
        meta_of(sorted(running, key=lambda p: str(meta_of(p).get("creationTimestamp")))[-1]).get("name")
    )
    done = await _log_progress(rt, cache.namespace, name, DOWNLOAD_CONTAINER)
    return f"downloading {what}{done}"


async def _log_progress(rt: Runtime, namespace: str, pod: str, container: str) -> str:
    """``: 1.20 GiB of 7.15 GiB (17%)`` from the downloader's last progress line, or ""."""
    try:
        text = await rt.kube.pod_log(namespace, pod, container=container, tail_lines=5)
    except ClusterError as exc:
        logger.debug("cannot read the log of %s/%s: %s", namespace, pod, exc)
        text = ""
    for line in reversed(text.strip().splitlines()):
        try:
            data = json.loads(line)
            done, total = int(data["done"]), int(data["total"])
        except (ValueError, KeyError, TypeError):
            continue
        share = f" ({100 * done // total}%)" if total > 0 else ""
        return f": {_gib(done)} of {_gib(total)}{share}"
    return ""


async def _per_pod(rt: Runtime, cache: WeightCache, workspace: Workspace, plan: Plan) -> CacheState:
    """Each pod fills its own volume (ReadWriteOnce): where its init container stands. Ready once
    every pod of the Workspace has filled its volume (a restarted pod finds it full and goes on)."""
    what = f"{cache.model_id} at {cache.revision}"
    pods = await rt.kube.list(PODS, cache.namespace, labels={LABEL_WORKSPACE: workspace.name})
    filled, running = 0, []
    for pod in sorted(pods, key=lambda p: str(meta_of(p).get("name"))):
        status = pod.get("status") or {}
        init = next(
            (c for c in status.get("initContainerStatuses") or [] if c.get("name") == INIT_CONTAINER), None
        )
        if init is None:
            continue
        state, last = init.get("state") or {}, (init.get("lastState") or {}).get("terminated") or {}
        ended = state.get("terminated") or {}
        if ended.get("exitCode") == 0:
            filled += 1
        elif ended or last.get("exitCode"):
            failure = _result(str((ended or last).get("message") or ""))
            name = meta_of(pod).get("name")
            why = str(failure.get("message") or f"exit code {(ended or last).get('exitCode')}")
            reason = f"Download{failure['reason']}" if failure.get("reason") else REASON_FAILED
            message = (
                f"downloading {what} into the volume of pod {name} failed: {why}; fix that, and the pod's "
                f"init container {INIT_CONTAINER} tries again by itself"
            )
            return CacheState(cache, False, True, reason, message)
        elif "running" in state:
            running.append(str(meta_of(pod).get("name")))
    expected = plan.total_nodes
    if filled >= expected:
        message = (
            f"the weights of {cache.model_id} at {cache.revision} are in each pod's own volume "
            f"({cache.settings.access_mode}): {filled}/{expected} filled"
        )
        return CacheState(cache, True, False, REASON_READY, message)
    message = f"{filled}/{expected} pods have the weights of {what} in their own volume"
    if running:
        done = await _log_progress(rt, cache.namespace, running[0], INIT_CONTAINER)
        message += f"; pod {running[0]} is downloading{done}"
    return _pending(cache, message)


def with_cache(verdicts: list[cond.Verdict], state: CacheState | None) -> list[cond.Verdict]:
    """The Workspace's conditions with ModelMirrorReady, and what a cache not ready holds back."""
    if state is None:
        return verdicts
    mirror = cond.Verdict(MODEL_MIRROR_READY, state.ready, state.reason, state.message)
    if state.ready:
        return [mirror, *verdicts]
    result: list[cond.Verdict] = [mirror]
    for v in verdicts:
        if v.type is ConditionType.RESOURCE_READY and v.ok:
            v = cond.Verdict(v.type, False, REASON_NOT_READY, state.message)
        elif (
            v.type is ConditionType.INFERENCE_READY and not v.ok and v.reason == cond.Reason.WORKLOAD_MISSING
        ):
            v = cond.Verdict(
                v.type, False, REASON_NOT_READY, "the inference pods start once the weights are cached"
            )
        elif v.type is ConditionType.WORKSPACE_SUCCEEDED:
            reason = cond.Reason.FAILED if state.failed else cond.Reason.PENDING
            v = cond.Verdict(v.type, False, reason, f"{state.reason}: {state.message}")
        result.append(v)
    return result


# --- garbage collection ------------------------------------------------------------------------


def _cache_of(rt: Runtime, preset_name: str) -> str:
    """The cache name of a preset: its Hugging Face id at its pinned commit (a name the catalog
    does not know is taken as the id, at main)."""
    try:
        preset = rt.toolkit.catalog.preset(preset_name)
    except (PykaitoError, AttributeError):
        return cache_name(preset_name, DEFAULT_REVISION)
    return cache_name(str(preset.model_id), str(getattr(preset, "revision", "") or DEFAULT_REVISION))


def _template_caches(rt: Runtime, sets: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """The caches InferenceSets' templates use: kept while a set is scaled to zero."""
    used = set()
    for body in sets:
        template = (body.get("spec") or {}).get("template") or {}
        preset = ((template.get("inference") or {}).get("preset") or {}).get("name")
        if preset and not meta_of(body).get("deletionTimestamp"):
            used.add((str(meta_of(body).get("namespace")), _cache_of(rt, str(preset))))
    return used


def cache_names_used(rt: Runtime, workspaces: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, cache) of every cache a Workspace might use: by its model alone, whatever its
    runtime, so that a cache is never taken from a Workspace that needs it."""
    used = set()
    for body in workspaces:
        if meta_of(body).get("deletionTimestamp"):
            continue
        try:
            workspace = parse(body)
        except Invalid:
            continue
        preset = workspace.inference.preset if workspace.inference else None
        if preset is not None:
            used.add((workspace.namespace, _cache_of(rt, str(preset.name))))
    return used


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


async def sweep(rt: Runtime, now: datetime.datetime) -> list[str]:
    """Mark unused caches, clear the mark of used ones, delete those unused past the grace period;
    returns ``namespace/name`` of the caches deleted. Under kopf peering only the acting replica
    sweeps (:mod:`pykaito.operator.peering`): a replica standing by changes nothing."""
    if rt.peering.clusterwide and not await is_acting(rt.kube, rt.peering):
        return []
    pvcs = [p for p in await rt.kube.list(PVCS) if (meta_of(p).get("labels") or {}).get(LABEL_WEIGHT_CACHE)]
    if not rt.peering.clusterwide:  # a KopfPeering per namespace: sweep where this replica acts
        namespaces = {str(meta_of(p).get("namespace")) for p in pvcs}
        acting_in = {ns for ns in namespaces if await is_acting(rt.kube, rt.peering, ns)}
        pvcs = [p for p in pvcs if str(meta_of(p).get("namespace")) in acting_in]
    if not pvcs:
        return []
    used = cache_names_used(rt, await rt.kube.list(WORKSPACES))
    try:
        used |= _template_caches(rt, await rt.kube.list(INFERENCESETS))
    except ApiError as exc:
        if not exc.not_found:  # no InferenceSet CRD: no templates
            raise
    deleted = []
    for pvc in pvcs:
        meta = meta_of(pvc)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        since = _annotations(pvc).get(ANNOTATION_UNUSED_SINCE)
        if (namespace, name) in used:
            if since is not None:
                await rt.kube.patch(
                    PVCS, namespace, name, {"metadata": {"annotations": {ANNOTATION_UNUSED_SINCE: None}}}
                )
            continue
        marked = _parse_time(str(since)) if since else None
        if marked is None:
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            await rt.kube.patch(
                PVCS, namespace, name, {"metadata": {"annotations": {ANNOTATION_UNUSED_SINCE: stamp}}}
            )
            logger.info(
                "weight cache %s/%s is unused; it is deleted after %gs",
                namespace,
                name,
                rt.settings.weight_cache_gc_grace_seconds,
            )
            continue
        if (now - marked).total_seconds() < rt.settings.weight_cache_gc_grace_seconds:
            continue
        await rt.kube.delete(JOBS, namespace, download_job_name(name))
        await rt.kube.delete(PVCS, namespace, name)
        logger.info("deleted weight cache %s/%s: no Workspace has used it since %s", namespace, name, since)
        deleted.append(f"{namespace}/{name}")
    return deleted


async def collect_forever(rt: Runtime) -> None:
    """The periodic sweep, every ``weight_cache_gc_interval_seconds``; errors are logged, never raised."""
    while True:
        try:
            await sweep(rt, datetime.datetime.now(tz=datetime.UTC))
        except (ClusterError, PykaitoError) as exc:
            logger.warning("weight cache sweep: %s", exc)
        await asyncio.sleep(max(0.1, rt.settings.weight_cache_gc_interval_seconds))


async def release_pod_caches(rt: Runtime, namespace: str, workspace: str) -> list[str]:
    """Delete a deleted Workspace's own cache volumes (ReadWriteOnce): what its StatefulSet's
    retention policy does where the cluster honours it (Kubernetes 1.27 and later), here for every
    cluster; returns their names. A volume still mounted goes once its pod has gone."""
    pvcs = await rt.kube.list(PVCS, namespace, labels={LABEL_WORKSPACE: workspace})
    doomed = [
        str(meta_of(p).get("name"))
        for p in pvcs
        if (meta_of(p).get("labels") or {}).get(LABEL_POD_CACHE) and not meta_of(p).get("deletionTimestamp")
    ]
    for name in doomed:
        await rt.kube.delete(PVCS, namespace, name)
    return doomed


def uses(rt: Runtime, body: Mapping[str, Any], name: str) -> bool:
    """Whether a Workspace (raw) may use the cache ``name`` of its namespace."""
    namespace = str(meta_of(body).get("namespace"))
    return (namespace, name) in cache_names_used(rt, [body])
