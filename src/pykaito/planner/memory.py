"""GPU memory arithmetic: how a model is split over GPUs and what each GPU holds.

The model of one GPU's memory, as vLLM uses it::

    usable   = gpu_memory x gpu_memory_utilization
    weights  = size_gib x 1.02 / (tensor_parallel x pipeline_parallel)
    overhead = 2.3 GiB + 5 % of weights          (CUDA context and graphs, activations, allocator slack)
    kv_cache = usable - weights - overhead       (vLLM gives everything left to the KV cache)

The constants are upstream KAITO's (2 % weight slack, 2.3 GiB fixed, the 1.05 divisor), so both
rules agree on the same hardware. What differs is the KV cache: a GPU holds the KV of its own layers
(pipeline stages split the layers) and of its own KV heads (tensor parallel splits them, but never
below one head per GPU; multi-head latent attention is replicated on every tensor-parallel rank).
A layout fits a context length L when the KV cache holds at least one sequence of L tokens, which is
the check vLLM itself makes when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from pykaito.catalog.types import GIB, InstanceType, ModelPreset

WEIGHT_SLACK = 1.02
ACTIVATION_SHARE = 0.05
FIXED_OVERHEAD_GIB = 2.3
KV_BLOCK_TOKENS = 16  # vLLM allocates the KV cache in blocks of 16 tokens
MIN_CONTEXT = 2048  # the smallest context worth serving (and upstream's default max-model-len)
MAX_NODES = 64


@dataclass(frozen=True)
class Layout:
    """How the model is spread over the hardware."""

    nodes: int
    gpus_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int

    @property
    def model_parallel(self) -> int:
        """GPUs that hold one copy of the model."""
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True)
class GpuMemory:
    """What one GPU holds under a layout (GiB) and how many tokens of KV cache that gives."""

    gpu_memory_gib: float
    usable_gib: float
    weights_gib: float
    overhead_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: float  # on this GPU
    kv_tokens: int  # per model replica (every GPU of the replica holds its share of the same tokens)

    def fits(self, max_model_len: int) -> bool:
        return self.kv_tokens >= max_model_len


def weights_gib(preset: ModelPreset) -> float:
    """The weights in GPU memory, with upstream's 2 % slack for replicated and extra tensors."""
    return preset.size_gib * WEIGHT_SLACK


def valid_tensor_parallel(preset: ModelPreset, tp: int) -> bool:
    """vLLM splits attention heads evenly; KV heads split evenly or are replicated evenly."""
    if preset.attention_heads and preset.attention_heads % tp:
        return False
    kv = preset.kv_heads
    return not (kv and kv % tp and tp % kv)


def best_tensor_parallel(preset: ModelPreset, gpus: int) -> int:
    """The largest tensor-parallel size that divides ``gpus`` and the model's heads."""
    for tp in range(gpus, 0, -1):
        if gpus % tp == 0 and valid_tensor_parallel(preset, tp):
            return tp
    return 1


def kv_bytes_per_token_per_gpu(preset: ModelPreset, layout: Layout) -> float:
    shard = min(layout.tensor_parallel, preset.kv_heads) if preset.kv_heads else 1
    return preset.kv_bytes_per_token / (layout.pipeline_parallel * shard)


def gpu_memory(preset: ModelPreset, instance: InstanceType, layout: Layout, utilization: float) -> GpuMemory:
    per_gpu = instance.per_gpu_memory_gib
    usable = per_gpu * utilization
    weights = weights_gib(preset) / layout.model_parallel
    overhead = FIXED_OVERHEAD_GIB + ACTIVATION_SHARE * weights
    kv_gib = max(0.0, usable - weights - overhead)
    per_token = kv_bytes_per_token_per_gpu(preset, layout)
    tokens = int(kv_gib * GIB / per_token) if per_token > 0 else 0
    tokens -= tokens % KV_BLOCK_TOKENS
    return GpuMemory(
        gpu_memory_gib=per_gpu,
        usable_gib=usable,
        weights_gib=weights,
        overhead_gib=overhead,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token=per_token,
        kv_tokens=tokens,
    )


def under_half_a_gpu(preset: ModelPreset, instance: InstanceType) -> bool:
    """Upstream's test for running one copy of the model per GPU (data parallel)."""
    return weights_gib(preset) < 0.5 * instance.per_gpu_memory_gib


def candidate_layouts(
    preset: ModelPreset, instance: InstanceType, nodes: int, *, split_layers: bool = False
) -> list[Layout]:
    """The layouts to try on ``nodes`` nodes, preferred first; every GPU of every node is used.

    One node with several GPUs and a model under half a GPU: one copy per GPU (data parallel).
    Otherwise tensor parallel across the GPUs of a node (the largest size the heads allow; what is
    left over becomes data parallel when a smaller group holds the model, else pipeline stages),
    and pipeline parallel across nodes. ``split_layers``: the engine only spreads the layers over
    the GPUs (transformers' device map), which counts as pipeline stages.
    """
    gpc = instance.gpu_count
    if split_layers:
        return [Layout(nodes, gpc, 1, nodes * gpc, 1)]
    layouts: list[Layout] = []
    if nodes == 1 and gpc > 1 and under_half_a_gpu(preset, instance):
        layouts.append(Layout(1, gpc, 1, 1, gpc))
    tp = best_tensor_parallel(preset, gpc)
    if nodes == 1 and tp < gpc:
        layouts.append(Layout(1, gpc, tp, 1, gpc // tp))
    pp = nodes * gpc // tp
    if preset.layers is None or pp <= preset.layers:
        layouts.append(Layout(nodes, gpc, tp, pp, 1))
    return layouts


def round_context(tokens: int) -> int:
    """A round context length at most ``tokens``: a multiple of 1024 from 4096 up, else of 256."""
    step = 1024 if tokens >= 4096 else 256
    return tokens - tokens % step
