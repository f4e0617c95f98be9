"""Short human sentences for every decision a plan makes, and the plan as plain data."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pykaito.catalog.types import GIB, InstanceType, ModelPreset
from pykaito.planner.engine_args import to_argv
from pykaito.planner.fit import Fit
from pykaito.planner.memory import ACTIVATION_SHARE, FIXED_OVERHEAD_GIB, WEIGHT_SLACK, under_half_a_gpu
from pykaito.planner.types import Plan, UpstreamEstimate


def _gib(value: float) -> str:
    return f"{value:.2f} GiB"


def _kib(value: float) -> str:
    return f"{value / 1024:g} KiB"


def describe_model(preset: ModelPreset) -> str:
    return (
        f"{preset.name} ({preset.model_id}): {preset.size_gib:g} GiB of {preset.dtype} weights, "
        f"a {preset.context_length}-token context, {_kib(preset.kv_bytes_per_token)} of KV cache per token."
    )


def describe_instance(instance: InstanceType, utilization: float) -> str:
    per_gpu = instance.per_gpu_memory_gib
    return (
        f"{instance.name} has {instance.gpu_count} x {instance.gpu_model} with {per_gpu:g} GiB each; "
        f"the engine may use {utilization:.0%} of it: {per_gpu * utilization:.2f} GiB per GPU."
    )


def parallelism(
    preset: ModelPreset, instance: InstanceType, fit: Fit, count: int | None, split_layers: bool = False
) -> list[str]:
    """Why this many nodes, and why this tensor/pipeline/data parallel split."""
    layout = fit.layout
    lines: list[str] = []
    total = layout.nodes * layout.gpus_per_node
    if count is not None:
        extra = "" if count == fit.needed_nodes else f" (the model needs only {fit.needed_nodes})"
        lines.append(f"{count} node(s) as resource.count asks{extra}.")
    elif layout.nodes > 1:
        lines.append(
            f"{layout.nodes} nodes: fewer cannot hold {preset.size_gib:g} GiB of weights plus a "
            f"{fit.target_len}-token sequence on {instance.name}; every GPU of a node is used ({total} GPUs)."
        )
    else:
        gpus = "1 GPU" if layout.gpus_per_node == 1 else f"{layout.gpus_per_node} GPUs"
        lines.append(
            f"1 node with {gpus}: it holds the weights and a "
            f"{fit.target_len}-token sequence; every GPU of the node is used."
        )
    if split_layers:
        if layout.gpus_per_node > 1:
            lines.append(
                f"transformers spreads the layers over the node's {layout.gpus_per_node} GPUs "
                "(its device map): no tensor parallelism."
            )
        else:
            lines.append("One GPU holds the whole model.")
    elif layout.data_parallel > 1 and layout.tensor_parallel == 1:
        half = under_half_a_gpu(preset, instance)
        why = "the model takes under half of one GPU" if half else "one GPU holds the model"
        lines.append(
            f"Tensor parallel 1, data parallel {layout.data_parallel}: {why}, "
            "so each GPU serves its own copy."
        )
    elif layout.data_parallel > 1:
        lines.append(
            f"Tensor parallel {layout.tensor_parallel}, data parallel {layout.data_parallel}: "
            f"{preset.attention_heads} attention and {preset.kv_heads} KV heads do not split "
            f"{layout.gpus_per_node} ways, and {layout.tensor_parallel} GPUs hold the model."
        )
    elif layout.tensor_parallel == 1 and layout.pipeline_parallel == 1:
        lines.append("Tensor parallel 1: one GPU holds the whole model.")
    else:
        if layout.tensor_parallel < layout.gpus_per_node:
            lines.append(
                f"Tensor parallel {layout.tensor_parallel}: the model's heads do not split "
                f"{layout.gpus_per_node} ways."
            )
        elif layout.gpus_per_node == 1:
            lines.append("Tensor parallel 1: each node has one GPU.")
        else:
            lines.append(
                f"Tensor parallel {layout.tensor_parallel}: the weights are split across the node's GPUs."
            )
        if layout.pipeline_parallel > 1:
            backend = " with the Ray executor" if layout.nodes > 1 else ""
            lines.append(
                f"Pipeline parallel {layout.pipeline_parallel}{backend}: each stage holds a share of "
                f"the {preset.layers or 'model'} layers."
            )
    return lines


def memory_math(fit: Fit) -> str:
    m = fit.memory
    return (
        f"Per GPU: {_gib(m.weights_gib)} of weights ({WEIGHT_SLACK:g} x the files / "
        f"{fit.layout.model_parallel}) + {_gib(m.overhead_gib)} overhead ({FIXED_OVERHEAD_GIB:g} GiB + "
        f"{ACTIVATION_SHARE:.0%} of weights) leave {_gib(m.kv_cache_gib)} of the usable "
        f"{_gib(m.usable_gib)} for the KV cache "
        f"({m.kv_bytes_per_token / 1024:.1f} KiB per token on each GPU)."
    )


def context(preset: ModelPreset, fit: Fit, concurrent: float) -> str:
    m = fit.memory
    if not fit.chosen_max_model_len:
        head = f"max-model-len {fit.max_model_len} as asked"
    elif fit.max_model_len == preset.context_length:
        head = f"max-model-len {fit.max_model_len}: the model's full context fits"
    else:
        head = (
            f"max-model-len {fit.max_model_len}: the largest round length the KV cache holds "
            f"(the model allows {preset.context_length})"
        )
    return (
        f"{head}; the KV cache holds {m.kv_tokens:,} tokens per replica, "
        f"{concurrent:.1f} full-length sequences at once."
    )


def decode_formula(bandwidth_gbs: float, tp: int, size_gib: float, tok_s: float) -> str:
    return (
        f"Single-stream decode is at most about {tok_s:.0f} tok/s: every token reads all weights once, "
        f"{bandwidth_gbs:g} GB/s per GPU x TP {tp} / {size_gib:g} GiB (mixture-of-experts models read "
        "fewer, so for them this is a floor of the ceiling)."
    )


def upstream_line(upstream: UpstreamEstimate | None, fit: Fit, instance: InstanceType) -> str:
    if upstream is None:
        return "Upstream KAITO's rule fails on this hardware (its fixed overhead exceeds the GPU's memory)."
    total = upstream.node_count * instance.gpu_count
    same = upstream.node_count == fit.needed_nodes
    verdict = "the same node count" if same else f"{fit.needed_nodes} node(s) here"
    return (
        f"Upstream KAITO's rule (max-model-len {upstream.max_model_len}) gives {upstream.node_count} "
        f"node(s) and {total} GPU(s): {verdict}."
    )


def decode_tokens_per_s(bandwidth_gbs: float, tensor_parallel: int, size_gib: float) -> float:
    """Bandwidth-bound ceiling for one stream: per-GPU bandwidth x TP / total weight bytes.

    Each token reads every weight once; tensor-parallel ranks read their shards at the same time,
    pipeline stages one after another, so only TP divides the time.
    """
    if size_gib <= 0:
        return 0.0
    return bandwidth_gbs * 1e9 * tensor_parallel / (size_gib * GIB)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (engine arguments also as one argv list)."""
    data = asdict(plan)
    data["memory"] = {key: round(value, 3) for key, value in data["memory"].items()}
    data["concurrent_sequences"] = round(plan.concurrent_sequences, 2)
    data["decode_tokens_per_s"] = round(plan.decode_tokens_per_s, 1)
    data["engine_args"] = [[name, value] for name, value in plan.engine_args]
    data["argv"] = to_argv(plan.engine_args)
    data["explanation"] = list(plan.explanation)
    data["notes"] = list(plan.notes)
    data["total_nodes"] = plan.total_nodes
    data["total_gpus"] = plan.total_gpus
    data["memory"]["total_gib"] = round(plan.memory.total_gib, 3)
    return data
