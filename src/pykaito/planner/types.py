"""The result of sizing a Workspace: a Plan (frozen, explainable, deterministic)."""

from __future__ import annotations

from dataclasses import dataclass

from pykaito.planner.engine_args import Arg


@dataclass(frozen=True)
class MemoryBreakdown:
    """GPU memory per GPU, in GiB: what the engine may use and what it is used for."""

    gpu_memory_gib: float  # physical memory of one GPU
    usable_gib: float  # gpu_memory_gib x gpu_memory_utilization
    weights_gib: float  # this GPU's share of the weights
    kv_cache_gib: float  # KV cache on this GPU
    overhead_gib: float  # activations, CUDA graphs, allocator slack

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib


@dataclass(frozen=True)
class UpstreamEstimate:
    """What upstream KAITO's sizing rule gives for the same inputs (for comparison)."""

    min_gpus: int
    node_count: int
    max_model_len: int


@dataclass(frozen=True)
class Plan:
    """How a Workspace is deployed: hardware, parallelism, context, memory and engine arguments."""

    workspace: str
    preset: str
    model_id: str
    runtime: str  # "vllm" | "transformers" | "llamacpp"
    instance_type: str  # "" for bring-your-own nodes described by labels
    gpu_model: str
    gpus_per_node: int  # GPUs the pod requests on each node (0 for CPU)
    node_count: int
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    max_model_len: int
    gpu_memory_utilization: float
    memory: MemoryBreakdown
    kv_cache_tokens: int  # tokens of KV cache across the deployment (one replica)
    concurrent_sequences: float  # full-length sequences that fit in the KV cache at once
    decode_tokens_per_s: float  # bandwidth-bound upper estimate for one stream
    engine_args: tuple[Arg, ...]
    explanation: tuple[str, ...]
    upstream: UpstreamEstimate | None = None
    disk_gib: float = 0.0
    replicas: int = 1  # independent copies of the model (data parallel over nodes), each on node_count nodes
    gpu_resource: str = "nvidia.com/gpu"  # what a pod requests: whole GPUs or a MIG slice
    notes: tuple[str, ...] = ()  # warnings for the user: asked for one thing, planned another
    model_revision: str = ""  # the Hugging Face commit the weights are pinned to ("": main)

    @property
    def total_nodes(self) -> int:
        return self.node_count * self.replicas

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.total_nodes

    @property
    def multi_node(self) -> bool:
        return self.node_count > 1
