"""The inference pod: its container, probes, volumes, scheduling and security settings.

One pod runs on each node the plan needs. A single-node pod starts the runtime directly:
``pykaito-runtime <runtime> <planned engine arguments>``. With several nodes, every pod runs a
short shell script that branches on its ordinal: pod 0 starts the Ray head, waits until all
``RAY_CLUSTER_SIZE`` nodes have joined and then runs the same runtime command (the API server);
the other pods join the head as Ray workers and block.
"""

from __future__ import annotations

import math
from typing import Any

from pykaito.api.types import LABEL_WORKSPACE, AdapterSpec, Workspace
from pykaito.errors import PlanError
from pykaito.manifests import local_weights, weight_cache
from pykaito.manifests.images import Images
from pykaito.manifests.meta import (
    ANNOTATION_API_KEY_SECRET,
    API_KEY_SECRET_KEY,
    MODEL_ACCESS_SECRET_KEY,
    dns_label,
    ray_head_address,
)
from pykaito.manifests.weight_cache import WeightCache
from pykaito.planner.engine_args import to_argv
from pykaito.planner.types import Plan

CONTAINER_NAME = "inference"
"""The container's name when the Workspace has none (it is named after the Workspace, as upstream)."""
RUNTIME_COMMAND = "pykaito-runtime"
PORT = 5000
PORT_NAME = "http"
RAY_PORT = 6379
HEALTH_PATH = "/health"
WEIGHTS_DIR = "/workspace/weights"
CONFIG_DIR = "/mnt/config"
ADAPTER_DIR = "/mnt/adapter"
ADAPTER_IMAGE_DIR = "/data"
"""Where an adapter image keeps its files; an init container copies them into the adapter volume."""
NON_ROOT_UID = 1000
PROBE_PERIOD_S = 10
STARTUP_BASE_S = {"vllm": 600, "transformers": 600, "llamacpp": 120}
"""Seconds every model gets to start (engine start, CUDA graphs) before its weights are counted."""
STARTUP_S_PER_GIB = 20
"""Seconds to download and load one GiB of weights (about 50 MiB/s)."""
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    },
)
"""GPU taints the pod tolerates: GPU nodes, provisioned GPU nodes, Azure spot nodes."""

_RAY_WAIT_PY = (
    "import os, sys, ray; ray.init(address='auto', logging_level='ERROR'); "
    "alive = sum(1 for n in ray.nodes() if n['Alive']); "
    "sys.exit(0 if alive >= int(os.environ['RAY_CLUSTER_SIZE']) else 1)"
)
MULTI_NODE_SCRIPT = f"""\
ordinal="${{POD_NAME##*-}}"
if [ "$ordinal" = "0" ]; then
  ray start --head --port={RAY_PORT} --disable-usage-stats
  until python3 -c "{_RAY_WAIT_PY}"; do
    echo "waiting for $RAY_CLUSTER_SIZE Ray nodes"; sleep 5
  done
  exec {RUNTIME_COMMAND} "$@"
fi
until ray start --address="$RAY_HEAD_ADDRESS:{RAY_PORT}" --disable-usage-stats --block; do
  echo "waiting for the Ray head at $RAY_HEAD_ADDRESS"; sleep 5
done
"""
"""Pod 0: Ray head plus API server; the others: Ray workers. ``$@`` is the runtime's arguments."""
MULTI_NODE_PROBE_SCRIPT = (
    'if [ "${POD_NAME##*-}" = "0" ]; then '
    "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:"
    f"{PORT}{HEALTH_PATH}', timeout=5)\"; "
    f'else ray health-check --address "$RAY_HEAD_ADDRESS:{RAY_PORT}"; fi'
)
"""Pod 0 answers /health; a worker is healthy while the Ray head sees it."""
_DOWNLOAD_PY = (
    "import os, sys, urllib.parse, urllib.request; d = sys.argv[1]; "
    "[urllib.request.urlretrieve(u, os.path.join(d, os.path.basename(urllib.parse.urlparse(u).path))) "
    "for u in sys.argv[2:]]"
)


def is_cpu(plan: Plan) -> bool:
    return plan.runtime == "llamacpp"


def weights_gib(plan: Plan) -> float:
    """The whole model's weights: one GPU's share times the GPUs holding distinct shares."""
    return plan.memory.weights_gib * max(1, plan.tensor_parallel) * max(1, plan.pipeline_parallel)


def disk_gib(plan: Plan) -> int:
    """Disk the weights need on a node, in whole GiB."""
    if plan.disk_gib > 0:
        return math.ceil(plan.disk_gib)
    return math.ceil(weights_gib(plan) + 80.0)


def weights_volume_gib(plan: Plan) -> int:
    """The weights volume's size limit: the node's disk for GPU models; the CPU image ships its
    model, so a CPU pod only needs room for a small download."""
    if is_cpu(plan):
        return math.ceil(weights_gib(plan) * 1.1 + 1.0)
    return disk_gib(plan)


def startup_failure_threshold(plan: Plan) -> int:
    """Startup probe failures allowed: a base per runtime plus time for each GiB of weights."""
    budget = STARTUP_BASE_S.get(plan.runtime, 600) + STARTUP_S_PER_GIB * weights_gib(plan)
    return math.ceil(budget / PROBE_PERIOD_S)


"""Where nodes keep baked-in weights for kaito.sh/use-local-weights, one directory per preset."""


def runtime_args(workspace: Workspace, plan: Plan, cache: WeightCache | None = None) -> list[str]:
    """``<runtime> <engine arguments>``: what follows ``pykaito-runtime`` in the container."""
    argv = to_argv(plan.engine_args)
    if "--host" not in argv:
        argv += ["--host", "0.0.0.0"]
    if "--port" not in argv:
        argv += ["--port", str(PORT)]
    names = adapter_names(workspace)
    if names and plan.runtime == "vllm" and "--lora-modules" not in argv:
        if "--enable-lora" not in argv:
            argv.append("--enable-lora")
        argv += ["--lora-modules", *(f"{n}={ADAPTER_DIR}/{n}" for n in names)]
    return [plan.runtime, *weight_cache.model_args(cache, local_weights.model_args(workspace, plan, argv))]


def adapters(workspace: Workspace) -> list[AdapterSpec]:
    if workspace.inference is None:
        return []
    return list(workspace.inference.adapters or [])


def adapter_names(workspace: Workspace) -> list[str]:
    return [a.source.name for a in adapters(workspace)]


def container_name(workspace: Workspace) -> str:
    """Named after the Workspace, so ``kubectl logs <pod> -c <workspace>`` works as upstream."""
    return workspace.name or CONTAINER_NAME


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def env(workspace: Workspace, plan: Plan, cache: WeightCache | None = None) -> list[dict[str, Any]]:
    """Environment variables; secrets are referenced, never copied."""
    result: list[dict[str, Any]] = []
    if is_cpu(plan):
        result += [{"name": "HOME", "value": "/tmp"}, {"name": "KAITO_HOME", "value": "/tmp/kaito"}]
    else:
        result.append({"name": "HF_HOME", "value": f"{WEIGHTS_DIR}/huggingface"})
    preset = workspace.inference.preset if workspace.inference else None
    access = preset.presetOptions.modelAccessSecret if preset and preset.presetOptions else None
    if access:
        # optional, as upstream: a pod whose model needs no token still starts without the Secret
        result.append(_secret_env("HF_TOKEN", access, MODEL_ACCESS_SECRET_KEY, optional=True))
    api_key_secret = workspace.annotation(ANNOTATION_API_KEY_SECRET)
    if api_key_secret:
        # the runtime's middleware checks it on every route but /health and /metrics
        result.append(_secret_env("KAITO_API_KEY", api_key_secret, API_KEY_SECRET_KEY))
    result += local_weights.env(workspace, plan)
    result += weight_cache.env(cache)
    if plan.multi_node:
        result += [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("VLLM_HOST_IP", "status.podIP"),
            {"name": "RAY_CLUSTER_SIZE", "value": str(plan.node_count)},
            {"name": "RAY_HEAD_ADDRESS", "value": ray_head_address(workspace)},
        ]
    return result


def _probe_handler(plan: Plan) -> dict[str, Any]:
    if plan.multi_node:
        return {"exec": {"command": ["/bin/sh", "-c", MULTI_NODE_PROBE_SCRIPT]}}
    return {"httpGet": {"path": HEALTH_PATH, "port": PORT, "scheme": "HTTP"}}


def probes(plan: Plan) -> dict[str, dict[str, Any]]:
    """Startup, liveness and readiness probes; the startup probe waits for the weights to load.

    Each probe gets its own handler dict, so the objects share nothing (no YAML aliases).
    """
    return {
        "startupProbe": {
            **_probe_handler(plan),
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failure_threshold(plan),
        },
        "livenessProbe": {
            **_probe_handler(plan),
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            **_probe_handler(plan),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def resources(plan: Plan) -> dict[str, Any]:
    """GPU requests equal to limits; a CPU pod asks for the memory its model and cache need."""
    if is_cpu(plan):
        need_gib = weights_gib(plan) + plan.memory.kv_cache_gib + plan.memory.overhead_gib + 0.5
        request_mib = max(512, math.ceil(need_gib * 1024 / 64) * 64)
        return {
            "requests": {"cpu": "1", "memory": f"{request_mib}Mi"},
            "limits": {"memory": f"{request_mib * 2}Mi"},
        }
    if plan.gpus_per_node < 1:
        raise PlanError(
            f"workspace {plan.workspace!r}: the {plan.runtime} runtime needs at least one GPU per node, "
            f"the plan has {plan.gpus_per_node}: choose a GPU instance type or the llamacpp runtime"
        )
    gpus = {plan.gpu_resource: str(plan.gpus_per_node)}
    return {"requests": dict(gpus), "limits": dict(gpus)}


def container_security_context(plan: Plan) -> dict[str, Any]:
    """No privilege escalation anywhere; the CPU image also runs as non-root on a read-only root."""
    if is_cpu(plan):
        return {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "capabilities": {"drop": ["ALL"]},
        }
    return {"allowPrivilegeEscalation": False}


def pod_security_context(plan: Plan) -> dict[str, Any] | None:
    if is_cpu(plan):
        return {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    return None


def volumes_and_mounts(
    workspace: Workspace, plan: Plan, images: Images, cache: WeightCache | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the inference container's mounts, init containers that fill the pod's own weight
    cache and adapter volumes)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if is_cpu(plan):
        volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    else:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    volumes.append({"name": "weights", "emptyDir": {"sizeLimit": f"{weights_volume_gib(plan)}Gi"}})
    mounts.append({"name": "weights", "mountPath": WEIGHTS_DIR})
    node_volumes, node_mounts = local_weights.volume_and_mount(workspace, plan)
    volumes += node_volumes
    mounts += node_mounts
    cache_volumes, cache_mounts = weight_cache.volume_and_mount(cache)
    volumes += cache_volumes
    mounts += cache_mounts
    config = workspace.inference.config if workspace.inference else None
    if config:
        volumes.append({"name": "config", "configMap": {"name": config}})
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    init_containers: list[dict[str, Any]] = []
    fill = weight_cache.init_container(cache, workspace, images)  # a pod's own cache (ReadWriteOnce)
    if fill is not None:
        init_containers.append(fill)
    for adapter in adapters(workspace):
        source = adapter.source
        volume = dns_label("adapter", source.name)
        path = f"{ADAPTER_DIR}/{source.name}"
        if source.volumeSource:
            volumes.append({"name": volume, **source.volumeSource})
            mounts.append({"name": volume, "mountPath": path, "readOnly": True})
            continue
        volumes.append({"name": volume, "emptyDir": {}})
        mounts.append({"name": volume, "mountPath": path})
        if source.image:
            command = ["/bin/sh", "-c", f"cp -r {ADAPTER_IMAGE_DIR}/. {path}/"]
            image = source.image
        elif source.urls:
            command = ["python3", "-c", _DOWNLOAD_PY, path, *source.urls]
            image = images.for_runtime(plan.runtime)
        else:
            continue
        init_containers.append(
            {
                "name": volume,
                "image": image,
                "imagePullPolicy": images.pull_policy,
                "command": command,
                "volumeMounts": [{"name": volume, "mountPath": path}],
                "securityContext": container_security_context(plan),
            }
        )
    return volumes, mounts, init_containers


def preset_image(workspace: Workspace) -> str | None:
    """``presetOptions.image``: the image to run instead of the runtime's own (deprecated upstream)."""
    preset = workspace.inference.preset if workspace.inference else None
    options = preset.presetOptions if preset is not None else None
    return options.image if options is not None and options.image else None


def image_pull_secrets(workspace: Workspace) -> list[dict[str, str]]:
    """Secrets for pulling the preset's image and the adapter images, each once."""
    names: list[str] = []
    preset = workspace.inference.preset if workspace.inference else None
    if preset is not None and preset.presetOptions is not None:
        names += [n for n in dict.fromkeys(preset.presetOptions.imagePullSecrets or []) if n]
    for adapter in adapters(workspace):
        for secret in adapter.source.imagePullSecrets or []:
            if secret not in names:
                names.append(secret)
    return [{"name": n} for n in names]


def node_affinity(workspace: Workspace) -> dict[str, Any] | None:
    """Required node affinity from resource.labelSelector (matchLabels become ``In`` expressions),
    and a preference for resource.preferredNodes by host name."""
    resource = workspace.resource
    selector = resource.labelSelector if resource else None
    expressions: list[dict[str, Any]] = []
    if selector is not None:
        expressions = [
            {"key": key, "operator": "In", "values": [value]}
            for key, value in sorted((selector.matchLabels or {}).items())
        ]
        for requirement in selector.matchExpressions or []:
            expression: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator}
            if requirement.values is not None:
                expression["values"] = list(requirement.values)
            expressions.append(expression)
    preferred = list(resource.preferredNodes or []) if resource else []
    affinity: dict[str, Any] = {}
    if expressions:
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }
    preferences: list[dict[str, Any]] = []
    if preferred:
        preferences.append(
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": preferred}
                    ]
                },
            }
        )
    if resource is not None and resource.instanceType:
        # the nodes provisioned for this Workspace carry kaito.sh/workspace, as upstream's; preferred,
        # not required, so that nodes brought by hand with the same labels still serve
        preferences.append(
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [
                        {"key": LABEL_WORKSPACE, "operator": "In", "values": [workspace.name]}
                    ]
                },
            }
        )
    if preferences:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferences
    return {"nodeAffinity": affinity} if affinity else None
