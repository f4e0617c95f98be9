"""The weight cache: a model's weights downloaded once per namespace, model and revision, into a PVC.

A Workspace whose engine downloads its weights from the Hugging Face hub at start (the vLLM and
transformers runtimes; not the CPU presets, whose image ships the model, nor
``kaito.sh/use-local-weights``, nor a custom ``presetOptions.image``) gets, when the operator runs
with the weight cache on:

- a PersistentVolumeClaim ``kaito-weights-<model>-<rev8>`` (labelled ``kaito.sh/weight-cache``
  with its own name; shared by every Workspace of the namespace on the same model and revision, so
  it has no owner and the operator removes it once unused);
- a download Job ``<cache>-download`` that fills it with ``python -m pykaito.models.snapshot``
  (the Hugging Face token from the Workspace's ``modelAccessSecret``, by reference only);
- inference pods that mount it read-only at ``/mnt/weight-cache``, give the engine
  ``/mnt/weight-cache/model`` as the model and run with the hub off (``HF_HUB_OFFLINE=1``).

With ``accessMode: ReadWriteOnce`` (or ``ReadWriteOncePod``: a storage class that offers no
ReadWriteMany) one volume cannot serve pods on several nodes, so each inference pod gets its own:

- the StatefulSet claims a volume ``weight-cache-pod-<workspace>-<ordinal>`` per pod from a
  volumeClaimTemplate (labelled ``kaito.sh/weight-cache-of`` with the cache's name), removed with
  the StatefulSet (``persistentVolumeClaimRetentionPolicy``) when the Workspace goes;
- an init container ``weight-cache`` runs the same downloader into it before the engine starts; it
  downloads nothing when the volume already holds the complete snapshot (its marker file), so a
  restarted pod starts at once and each new pod downloads once.

Pure: the caller (the operator) decides when the cache is ready and the pods may start.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from pykaito.api.types import ANNOTATION_USE_LOCAL_WEIGHTS, Workspace
from pykaito.errors import InputError
from pykaito.manifests.images import Images
from pykaito.manifests.meta import LABEL_MANAGED_BY, MANAGED_BY, MODEL_ACCESS_SECRET_KEY, dns_label
from pykaito.planner.types import Plan

LABEL_WEIGHT_CACHE = "kaito.sh/weight-cache"
"""On the PVC, its download Job and the Job's pods: the cache's name."""
LABEL_POD_CACHE = "kaito.sh/weight-cache-of"
"""On a pod's own cache volume (ReadWriteOnce): the name of the cache it holds a copy of."""
ANNOTATION_MODEL = "kaito.sh/weight-cache-model"
ANNOTATION_MODEL_REVISION = "kaito.sh/weight-cache-revision"
ANNOTATION_STATE = "kaito.sh/weight-cache-state"
"""Set on the PVC by the operator: ``Ready`` once the download succeeded."""
ANNOTATION_COMMIT = "kaito.sh/weight-cache-commit"
ANNOTATION_UNUSED_SINCE = "kaito.sh/weight-cache-unused-since"
STATE_READY = "Ready"
MOUNT_PATH = "/mnt/weight-cache"
MODEL_PATH = f"{MOUNT_PATH}/model"
"""Where the model's files are in the inference container (``pykaito.models.snapshot.MODEL_DIR``)."""
VOLUME = "weight-cache"
DOWNLOAD_CONTAINER = "download"
INIT_CONTAINER = "weight-cache"
"""The init container that fills a pod's own cache volume (ReadWriteOnce)."""
SCRATCH_VOLUME = "weight-cache-tmp"
POD_VOLUME = "weight-cache-pod"
"""A pod's own cache volume (ReadWriteOnce); its own name, so that a StatefulSet's claim template
left from that mode never stands in for the shared cache's volume."""
TERMINATION_LOG = "/dev/termination-log"
DEFAULT_REVISION = "main"
CACHED_RUNTIMES = ("vllm", "transformers")
HEADROOM = 1.15
SPARE_GIB = 2
NON_ROOT_UID = 1000
_MODEL_FLAGS = ("--model", "--force-model")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
PER_POD_MODES = ("ReadWriteOnce", "ReadWriteOncePod")
"""Access modes one volume cannot serve several nodes with: each pod gets its own cache."""


@dataclass(frozen=True)
class WeightCacheSettings:
    """How caches are made (the chart's ``weightCache`` values)."""

    storage_class: str = ""  # "" leaves the cluster's default class
    size: str = ""  # a Kubernetes quantity ("200Gi") for every cache; "" sizes each from its model
    access_mode: str = "ReadWriteMany"
    image: str = ""  # the downloader's image; "" runs the CPU runtime image

    def __post_init__(self) -> None:
        if self.size and not _QUANTITY.match(self.size):
            raise InputError(f"weight cache size {self.size!r} is not a Kubernetes quantity such as 200Gi")
        if self.access_mode not in ACCESS_MODES:
            raise InputError(
                f"weight cache access mode {self.access_mode!r}: expected one of {', '.join(ACCESS_MODES)}"
            )

    @property
    def per_pod(self) -> bool:
        """Whether each inference pod gets its own cache volume (the class offers no ReadWriteMany)."""
        return self.access_mode in PER_POD_MODES


@dataclass(frozen=True)
class WeightCache:
    """The cache of one model revision in one namespace."""

    name: str
    namespace: str
    model_id: str
    revision: str
    size_gib: int
    settings: WeightCacheSettings = WeightCacheSettings()

    @property
    def job_name(self) -> str:
        return download_job_name(self.name)

    @property
    def per_pod(self) -> bool:
        """Each pod fills its own volume (init container) instead of sharing one filled by a Job."""
        return self.settings.per_pod

    @property
    def storage(self) -> str:
        """The size each volume asks for: the chart's, else the model's with headroom."""
        return self.settings.size or f"{self.size_gib}Gi"


def download_job_name(name: str) -> str:
    """The download Job of the cache ``name``."""
    return dns_label(name, "download")


def revision_tag(revision: str) -> str:
    """Eight characters naming a revision: a commit's own prefix, else a hash of the branch or tag."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision[:8]
    return hashlib.sha256(revision.encode("utf-8")).hexdigest()[:8]


def cache_name(model_id: str, revision: str = DEFAULT_REVISION) -> str:
    """``kaito-weights-<model>-<rev8>``, a DNS-1123 label (shortened with a hash when long)."""
    model = re.sub(r"[^a-z0-9-]+", "-", model_id.lower()).strip("-")
    return dns_label("kaito-weights", f"{model}-{revision_tag(revision)}")


def applies(workspace: Workspace, plan: Plan) -> bool:
    """Whether the Workspace's engine would download its weights from the hub at start."""
    preset = workspace.inference.preset if workspace.inference else None
    if preset is None or plan.runtime not in CACHED_RUNTIMES or not plan.model_id:
        return False
    if (workspace.annotation(ANNOTATION_USE_LOCAL_WEIGHTS) or "").strip().lower() == "true":
        return False
    options = preset.presetOptions
    return not (options is not None and options.image)


def size_gib(plan: Plan) -> int:
    """The model's weight files with headroom (the hub's sizes vary a little from the catalog's)."""
    whole = plan.memory.weights_gib * max(1, plan.tensor_parallel) * max(1, plan.pipeline_parallel)
    return math.ceil(whole * HEADROOM + SPARE_GIB)


def cache_for(
    workspace: Workspace, plan: Plan, settings: WeightCacheSettings | None = None
) -> WeightCache | None:
    """The cache a Workspace uses, or None when its weights are not downloaded at start; at the
    commit the preset is pinned to, else the repository's main branch."""
    if not applies(workspace, plan):
        return None
    revision = plan.model_revision or DEFAULT_REVISION
    return WeightCache(
        name=cache_name(plan.model_id, revision),
        namespace=workspace.namespace,
        model_id=plan.model_id,
        revision=revision,
        size_gib=size_gib(plan),
        settings=settings or WeightCacheSettings(),
    )


def _labels(cache: WeightCache) -> dict[str, str]:
    return {LABEL_WEIGHT_CACHE: cache.name, LABEL_MANAGED_BY: MANAGED_BY}


def render_pvc(cache: WeightCache, settings: WeightCacheSettings | None = None) -> dict[str, Any]:
    """The PersistentVolumeClaim holding the cache (no owner: Workspaces share it)."""
    settings = settings or cache.settings
    spec: dict[str, Any] = {
        "accessModes": [settings.access_mode],
        "resources": {"requests": {"storage": settings.size or f"{cache.size_gib}Gi"}},
        "volumeMode": "Filesystem",
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": cache.name,
            "namespace": cache.namespace,
            "labels": _labels(cache),
            "annotations": _annotations(cache),
        },
        "spec": spec,
    }


def download_command(cache: WeightCache) -> list[str]:
    return [
        "python3", "-m", "pykaito.models.snapshot",
        "--repo", cache.model_id,
        "--revision", cache.revision,
        "--dest", MOUNT_PATH,
        "--result-file", TERMINATION_LOG,
    ]  # fmt: skip


def render_download_job(
    cache: WeightCache,
    workspace: Workspace,
    images: Images | None = None,
    settings: WeightCacheSettings | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job that fills the cache, once; the token by reference to the Workspace's Secret.

    A download refused for a reason (exit 1: no access, not found, disk full, checksum) fails the
    Job at once; a crash or an eviction is retried twice.
    """
    images = images or Images()
    settings = settings or cache.settings
    container = _downloader(cache, workspace, images, settings, DOWNLOAD_CONTAINER, VOLUME, "tmp")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cache.job_name,
            "namespace": cache.namespace,
            "labels": _labels(cache),
            "annotations": _annotations(cache),
        },
        "spec": {
            "backoffLimit": 2,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": DOWNLOAD_CONTAINER, "operator": "In", "values": [1]},
                    }
                ]
            },
            "template": {
                "metadata": {"labels": _labels(cache)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_UID,
                        "runAsGroup": NON_ROOT_UID,
                        "fsGroup": NON_ROOT_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": VOLUME, "persistentVolumeClaim": {"claimName": cache.name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def _annotations(cache: WeightCache) -> dict[str, str]:
    return {ANNOTATION_MODEL: cache.model_id, ANNOTATION_MODEL_REVISION: cache.revision}


def _downloader(
    cache: WeightCache,
    workspace: Workspace,
    images: Images,
    settings: WeightCacheSettings,
    name: str,
    volume: str,
    scratch: str,
) -> dict[str, Any]:
    """The downloader's container: non-root, read-only root, the token by reference only."""
    preset = workspace.inference.preset if workspace.inference else None
    secret = preset.presetOptions.modelAccessSecret if preset and preset.presetOptions else None
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    if secret:
        ref = {"name": secret, "key": MODEL_ACCESS_SECRET_KEY, "optional": True}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {
        "name": name,
        "image": settings.image or images.cpu,
        "imagePullPolicy": images.pull_policy,
        "command": download_command(cache),
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [
            {"name": volume, "mountPath": MOUNT_PATH},
            {"name": scratch, "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return container


# --- the inference pod's side ---------------------------------------------------------------------


def model_args(cache: WeightCache | None, argv: list[str]) -> list[str]:
    """``argv`` with the model given as the cache's directory instead of a Hugging Face id."""
    if cache is None:
        return argv
    result = _without(argv, "--revision")  # a directory has no revisions: the cache holds the pinned one
    for i, arg in enumerate(result[:-1]):
        if arg in _MODEL_FLAGS:
            result[i + 1] = MODEL_PATH
            return result
    return ["--model", MODEL_PATH, *result]


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag`` and its value."""
    result: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            result.append(arg)
    return result


def env(cache: WeightCache | None) -> list[dict[str, Any]]:
    """The hub is off: every file is in the cache."""
    return [] if cache is None else [{"name": "HF_HUB_OFFLINE", "value": "1"}]


def volume_and_mount(cache: WeightCache | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The inference container's read-only mount, and the pod's volumes: the shared PVC, or (one
    volume per pod) the scratch space of the init container (the StatefulSet adds the claim)."""
    if cache is None:
        return [], []
    if cache.per_pod:
        mount = {"name": POD_VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}
        return [{"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}], [mount]
    volume = {"name": VOLUME, "persistentVolumeClaim": {"claimName": cache.name, "readOnly": True}}
    return [volume], [{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}]


def init_container(cache: WeightCache | None, workspace: Workspace, images: Images) -> dict[str, Any] | None:
    """The init container that fills the pod's own volume (ReadWriteOnce), or None. The downloader
    finds a complete snapshot by its marker and downloads nothing: a restarted pod starts at once."""
    if cache is None or not cache.per_pod:
        return None
    return _downloader(cache, workspace, images, cache.settings, INIT_CONTAINER, POD_VOLUME, SCRATCH_VOLUME)


def claim_templates(cache: WeightCache | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The StatefulSet's volumeClaimTemplates: one cache volume per pod (ReadWriteOnce), else none;
    ``labels`` (the Workspace's) go on each volume too, so the operator finds them on deletion."""
    if cache is None or not cache.per_pod:
        return []
    spec: dict[str, Any] = {
        "accessModes": [cache.settings.access_mode],
        "resources": {"requests": {"storage": cache.storage}},
        "volumeMode": "Filesystem",
    }
    if cache.settings.storage_class:
        spec["storageClassName"] = cache.settings.storage_class
    meta = {**(labels or {}), LABEL_POD_CACHE: cache.name, LABEL_MANAGED_BY: MANAGED_BY}
    return [
        {"metadata": {"name": POD_VOLUME, "labels": meta, "annotations": _annotations(cache)}, "spec": spec}
    ]


RETENTION = {"whenDeleted": "Delete", "whenScaled": "Delete"}
"""Pods' own cache volumes go with the StatefulSet (the Workspace) and with a scaled-down pod."""
