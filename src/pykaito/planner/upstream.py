"""Upstream KAITO's sizing rule, reproduced exactly so that plans can be compared with it.

    model    = size x 1.02
    per_gpu  = node GPU memory / GPUs per node
    avail    = per_gpu x 0.84
    fixed    = 2.3 GiB + max_model_len x KV bytes per token / GPUs per node
    usable   = (avail - fixed) / 1.05
    min_gpus = floor(model / usable) + 1
    nodes    = ceil(min_gpus / GPUs per node)

It fails when ``avail <= fixed``. Upstream always uses every GPU of a node, so the deployment gets
``nodes x GPUs per node`` GPUs; ``max_model_len`` defaults to 2048.
"""

from __future__ import annotations

import math

from pykaito.catalog.types import GIB, InstanceType, ModelPreset
from pykaito.errors import PlanError
from pykaito.planner.types import UpstreamEstimate

UPSTREAM_MODEL_SLACK = 1.02
UPSTREAM_UTILIZATION = 0.84
UPSTREAM_FIXED_GIB = 2.3
UPSTREAM_WEIGHT_DIVISOR = 1.05
UPSTREAM_DEFAULT_MAX_MODEL_LEN = 2048


def upstream_estimate(
    size_gib: float,
    kv_bytes_per_token: int,
    node_gpu_memory_gib: float,
    gpu_count: int,
    max_model_len: int = UPSTREAM_DEFAULT_MAX_MODEL_LEN,
) -> UpstreamEstimate:
    """The GPUs and nodes upstream KAITO chooses; PlanError where upstream fails."""
    if gpu_count <= 0:
        raise PlanError("upstream's rule needs GPUs: the instance type has none")
    model = size_gib * UPSTREAM_MODEL_SLACK
    per_gpu = node_gpu_memory_gib / gpu_count
    avail = per_gpu * UPSTREAM_UTILIZATION
    fixed = UPSTREAM_FIXED_GIB + max_model_len * kv_bytes_per_token / GIB / gpu_count
    if avail <= fixed:
        raise PlanError(
            f"upstream's rule fails: {avail:.2f} GiB available per GPU does not cover the "
            f"{fixed:.2f} GiB fixed overhead at max-model-len {max_model_len}"
        )
    usable = (avail - fixed) / UPSTREAM_WEIGHT_DIVISOR
    min_gpus = math.floor(model / usable) + 1
    nodes = math.ceil(min_gpus / gpu_count)
    return UpstreamEstimate(min_gpus=min_gpus, node_count=nodes, max_model_len=max_model_len)


def upstream_for(
    preset: ModelPreset, instance: InstanceType, max_model_len: int = UPSTREAM_DEFAULT_MAX_MODEL_LEN
) -> UpstreamEstimate | None:
    """Upstream's estimate for a catalog preset and instance type, or None where it fails."""
    if not instance.has_gpu:
        return None
    try:
        return upstream_estimate(
            preset.size_gib,
            preset.kv_bytes_per_token,
            instance.gpu_memory_gib,
            instance.gpu_count,
            max_model_len,
        )
    except PlanError:
        return None
