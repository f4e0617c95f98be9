"""Choosing the node count, the layout and the context length for one model on one machine type."""

from __future__ import annotations

from dataclasses import dataclass

from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.errors import PlanError
from pykaito.planner.memory import (
    MAX_NODES,
    MIN_CONTEXT,
    GpuMemory,
    Layout,
    candidate_layouts,
    gpu_memory,
    round_context,
)


@dataclass(frozen=True)
class Fit:
    """A layout that holds the model, the memory it leaves, and the context chosen."""

    layout: Layout
    memory: GpuMemory
    max_model_len: int
    chosen_max_model_len: bool  # True when the planner picked max-model-len
    needed_nodes: int  # the fewest nodes that hold the model at the target context
    target_len: int  # the context the node count was sized for


class NoFit(PlanError):
    """The model does not fit; ``needed_nodes`` says how many nodes would (0: none would)."""

    def __init__(self, message: str, needed_nodes: int = 0, max_fitting_len: int = 0) -> None:
        self.needed_nodes = needed_nodes
        self.max_fitting_len = max_fitting_len
        super().__init__(message)


def target_context(preset: ModelPreset, max_model_len: int | None) -> int:
    """The context the hardware must hold: the one asked for, else the smallest worth serving."""
    if max_model_len is not None:
        if max_model_len < 1:
            raise PlanError(f"max-model-len must be a positive number of tokens, got {max_model_len}")
        if max_model_len > preset.context_length:
            raise PlanError(
                f"max-model-len {max_model_len} exceeds {preset.name}'s context limit of "
                f"{preset.context_length} tokens: set it to {preset.context_length} or less"
            )
        return max_model_len
    return min(MIN_CONTEXT, preset.context_length)


def _first_fit(
    preset: ModelPreset,
    instance: InstanceType,
    nodes: int,
    target: int,
    utilization: float,
    split_layers: bool = False,
) -> tuple[Layout, GpuMemory] | None:
    for layout in candidate_layouts(preset, instance, nodes, split_layers=split_layers):
        memory = gpu_memory(preset, instance, layout, utilization)
        if memory.fits(target):
            return layout, memory
    return None


def _largest_context(preset: ModelPreset, memory: GpuMemory) -> int:
    if memory.kv_tokens >= preset.context_length:
        return preset.context_length
    return round_context(memory.kv_tokens)


def _best_context(
    preset: ModelPreset, instance: InstanceType, nodes: int, utilization: float, split_layers: bool = False
) -> int:
    """The largest context any layout on ``nodes`` nodes holds (0 when none holds the weights)."""
    best = 0
    for layout in candidate_layouts(preset, instance, nodes, split_layers=split_layers):
        memory = gpu_memory(preset, instance, layout, utilization)
        best = max(best, _largest_context(preset, memory))
    return best


def needed_nodes(
    preset: ModelPreset, instance: InstanceType, target: int, utilization: float, split_layers: bool = False
) -> int:
    """The fewest nodes of ``instance`` that hold the model with ``target`` tokens of context (0: none)."""
    limit = min(MAX_NODES, preset.layers or MAX_NODES)
    for nodes in range(1, limit + 1):
        if _first_fit(preset, instance, nodes, target, utilization, split_layers) is not None:
            return nodes
    return 0


def fit(
    preset: ModelPreset,
    instance: InstanceType,
    *,
    max_model_len: int | None = None,
    count: int | None = None,
    utilization: float | None = None,
    available_nodes: int | None = None,
    split_layers: bool = False,
) -> Fit:
    """Size ``preset`` on ``instance``; NoFit says why not and what would be needed."""
    if not instance.has_gpu:
        raise NoFit(f"{instance.name} has no GPU; {preset.name} needs one")
    util = instance.gpu_memory_utilization if utilization is None else utilization
    target = target_context(preset, max_model_len)
    needed = needed_nodes(preset, instance, target, util, split_layers)
    gpus = f"{instance.gpu_count} x {instance.gpu_model}, {instance.gpu_memory_gib:g} GiB"
    where = f"{instance.name} ({gpus})" if instance.cloud != "node" else f"{gpus}"
    if needed == 0:
        raise NoFit(
            f"{preset.name} ({preset.size_gib:g} GiB) does not fit on any number of {where} "
            f"with max-model-len {target}"
        )
    nodes = needed
    if count is not None:
        if count < 1:
            raise PlanError(f"resource.count must be at least 1, got {count}")
        if count < needed:
            longest = _best_context(preset, instance, count, util, split_layers)
            raise NoFit(
                f"resource.count {count} is too few: {preset.name} ({preset.size_gib:g} GiB) needs "
                f"{needed} nodes of {where} with max-model-len {target}",
                needed_nodes=needed,
                max_fitting_len=longest if longest >= min(MIN_CONTEXT, preset.context_length) else 0,
            )
        nodes = count
    if available_nodes is not None and nodes > available_nodes:
        raise NoFit(
            f"{preset.name} ({preset.size_gib:g} GiB) needs {nodes} nodes of {where} with "
            f"max-model-len {target}, but only {available_nodes} matching node(s) are available",
            needed_nodes=nodes,
        )
    found = _first_fit(preset, instance, nodes, target, util, split_layers)
    if found is None:
        raise NoFit(
            f"{preset.name} cannot be split over {nodes} nodes of {where}: it has only "
            f"{preset.layers} layers for the pipeline stages",
            needed_nodes=needed,
        )
    layout, memory = found
    chosen = max_model_len is None
    length = _largest_context(preset, memory) if chosen else target
    return Fit(
        layout=layout,
        memory=memory,
        max_model_len=length,
        chosen_max_model_len=chosen,
        needed_nodes=needed,
        target_len=target,
    )
