"""Plans for CPU presets: llama.cpp on one node, with its KV cache in host memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pykaito.api.types import Runtime
from pykaito.catalog.types import GIB, InstanceType, ModelPreset
from pykaito.errors import PlanError
from pykaito.planner import explain
from pykaito.planner.commands import CPU_PARALLEL, llamacpp_args
from pykaito.planner.inputs import as_int, override
from pykaito.planner.types import MemoryBreakdown, Plan

CPU_DEFAULT_CONTEXT = 4096


def cpu_plan(
    preset: ModelPreset,
    workspace: str,
    instance: InstanceType | None,
    max_model_len: int | None,
    overrides: Mapping[str, Any],
) -> Plan:
    """One node, no GPU: ``parallel`` sequences share a KV cache of ``parallel x max-model-len`` tokens.

    An overridden ``parallel`` in the ConfigMap's ``llamacpp:`` section sizes the cache too.
    """
    length = max_model_len if max_model_len is not None else min(CPU_DEFAULT_CONTEXT, preset.context_length)
    if length > preset.context_length:
        raise PlanError(
            f"max-model-len {length} exceeds {preset.name}'s context limit of {preset.context_length} tokens"
        )
    asked = override(overrides, "--parallel")
    parallel = as_int(asked, "parallel") if asked is not None else CPU_PARALLEL
    if parallel < 1:
        raise PlanError(f"inference_config.yaml: parallel must be at least 1, got {parallel}")
    tokens = length * parallel
    kv_gib = tokens * preset.kv_bytes_per_token / GIB
    memory = MemoryBreakdown(
        gpu_memory_gib=0.0, usable_gib=0.0, weights_gib=preset.size_gib, kv_cache_gib=kv_gib, overhead_gib=0.0
    )
    args = llamacpp_args(preset, max_model_len=length, parallel=parallel, overrides=overrides)
    where = f" ({instance.name})." if instance else "."
    lines = (
        explain.describe_model(preset),
        f"{preset.name} runs on CPU with llama.cpp: no GPU, 1 node{where}",
        f"max-model-len {length}; {parallel} sequences at once share a {tokens}-token KV cache of "
        f"{kv_gib * 1024:.0f} MiB in host memory, next to {preset.size_gib * 1024:.0f} MiB of weights.",
    )
    return Plan(
        workspace=workspace,
        preset=preset.name,
        model_id=preset.model_id,
        runtime=Runtime.LLAMACPP.value,
        instance_type=instance.name if instance else "",
        gpu_model="none",
        gpus_per_node=0,
        node_count=1,
        tensor_parallel=1,
        pipeline_parallel=1,
        data_parallel=1,
        max_model_len=length,
        gpu_memory_utilization=0.0,
        memory=memory,
        kv_cache_tokens=tokens,
        concurrent_sequences=float(parallel),
        decode_tokens_per_s=0.0,
        engine_args=tuple(args),
        explanation=lines,
        upstream=None,
        disk_gib=preset.disk_gib,
    )
