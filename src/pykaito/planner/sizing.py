"""Sizing a Workspace: which hardware, how it is split, what context, and the engine's command line.

:func:`plan` is a pure function of the Workspace, the catalog, the bring-your-own nodes and the
ConfigMap's ``inference_config.yaml``. A model that is not in the catalog (any ``org/model`` id or
a local directory) is described first with :func:`pykaito.catalog.models.describe_model` and passed
in as ``model``; the planner itself never reads the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pykaito.api.defaults import runtime_of
from pykaito.api.types import ANNOTATION_PERFORMANCE_MODE, Runtime, Workspace
from pykaito.catalog.loader import Catalog, load_catalog
from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.errors import CatalogError, PlanError
from pykaito.planner import explain
from pykaito.planner.commands import DEFAULT_PERFORMANCE_MODE, max_num_seqs, transformers_args, vllm_args
from pykaito.planner.cpu import cpu_plan
from pykaito.planner.engine_args import flag_name
from pykaito.planner.fit import Fit, NoFit, fit
from pykaito.planner.inputs import (
    NodeInfo,
    as_float,
    as_int,
    check_runtime,
    engine_overrides,
    nodes_instance,
    override,
)
from pykaito.planner.partition import partitioned_instance
from pykaito.planner.template import template_plan
from pykaito.planner.types import MemoryBreakdown, Plan
from pykaito.planner.upstream import upstream_for

PERFORMANCE_MODES = {
    "interactivity": "low latency per request (vLLM --performance-mode interactivity: finer CUDA "
    "graphs, latency-oriented kernels, smaller batches)",
    "throughput": "the most tokens per second overall (vLLM --performance-mode throughput: larger "
    "CUDA graphs, more aggressive batching)",
}


def _suggestions(
    preset: ModelPreset, catalog: Catalog, *, max_model_len: int | None, count: int | None, cloud: str | None
) -> str:
    found = alternatives(preset, catalog, max_model_len=max_model_len, count=count, cloud=cloud, limit=3)
    if not found and cloud is not None:
        found = alternatives(preset, catalog, max_model_len=max_model_len, count=count, limit=3)
    if not found:
        return ""
    names = ", ".join(
        f"{p.instance_type} ({p.node_count} node{'s' if p.node_count > 1 else ''}, "
        f"max-model-len {p.max_model_len})"
        for p in found
    )
    where = f" with {count} node{'s' if count > 1 else ''}" if count else ""
    return f"; these fit{where}: {names}"


def plan_on(
    preset: ModelPreset,
    instance: InstanceType | None,
    *,
    runtime: str | None = None,
    max_model_len: int | None = None,
    count: int | None = None,
    config: Mapping[str, Any] | None = None,
    workspace: str = "",
    catalog: Catalog | None = None,
    available_nodes: int | None = None,
    suggest: bool = True,
    performance_mode: str | None = None,
) -> Plan:
    """Plan ``preset`` on ``instance`` (None: a CPU preset needs no instance type).

    When the model does not fit, the PlanError names the instance types that would
    (``suggest=False`` leaves them out).
    """
    runtime = runtime or preset.default_runtime
    check_runtime(preset, runtime)
    overrides = engine_overrides(config, runtime)
    asked_len = override(overrides, "--max-model-len")
    if asked_len is not None:
        max_model_len = as_int(asked_len, "max-model-len")
    if runtime == Runtime.LLAMACPP.value:
        return cpu_plan(preset, workspace, instance, max_model_len, overrides)
    if instance is None:
        raise PlanError(
            f"{preset.name} needs a GPU: name an instance type (resource.instanceType; "
            "`kaito instance-types` lists them)"
        )
    asked_util = override(overrides, "--gpu-memory-utilization")
    utilization = instance.gpu_memory_utilization
    if asked_util is not None:
        utilization = as_float(asked_util, "gpu-memory-utilization")
    try:
        found = fit(
            preset,
            instance,
            max_model_len=max_model_len,
            count=count,
            utilization=utilization,
            available_nodes=available_nodes,
            split_layers=runtime == Runtime.TRANSFORMERS.value,
        )
    except NoFit as exc:
        hint = ""
        if exc.max_fitting_len:
            hint = f"; or set max-model-len to {exc.max_fitting_len} or less"
        if exc.needed_nodes and count is not None:
            hint = f"; set resource.count to {exc.needed_nodes} or remove it{hint}"
        others = ""
        if suggest:
            others = _suggestions(
                preset,
                catalog or load_catalog(),
                max_model_len=max_model_len,
                count=count,
                cloud=instance.cloud if instance.cloud != "node" else None,
            )
        raise PlanError(f"{exc}{hint}{others}") from exc
    if runtime == Runtime.TRANSFORMERS.value and found.layout.nodes > 1:
        raise PlanError(
            f"{preset.name} needs {found.layout.nodes} nodes of {instance.name}, and the transformers "
            "runtime runs on one node: use the vllm runtime or a larger instance type"
        )
    return _gpu_plan(
        preset, instance, found, runtime, utilization, overrides, workspace, count, performance_mode
    )


def _gpu_plan(
    preset: ModelPreset,
    instance: InstanceType,
    found: Fit,
    runtime: str,
    utilization: float,
    overrides: Mapping[str, Any],
    workspace: str,
    count: int | None,
    performance_mode: str | None = None,
) -> Plan:
    layout, mem = found.layout, found.memory
    concurrent = layout.data_parallel * mem.kv_tokens / found.max_model_len
    num_seqs = max_num_seqs(mem.kv_tokens)
    if runtime == Runtime.TRANSFORMERS.value:
        args = transformers_args(preset, overrides=overrides)
    else:
        args = vllm_args(
            preset,
            layout,
            max_model_len=found.max_model_len,
            gpu_memory_utilization=utilization,
            num_seqs=num_seqs,
            performance_mode=performance_mode,
            overrides=overrides,
        )
    decode = explain.decode_tokens_per_s(
        instance.memory_bandwidth_gbs, layout.tensor_parallel, preset.size_gib
    )
    upstream = upstream_for(preset, instance)
    lines = [
        explain.describe_model(preset),
        explain.describe_instance(instance, utilization),
        *explain.parallelism(preset, instance, found, count, runtime == Runtime.TRANSFORMERS.value),
        explain.memory_math(found),
        explain.context(preset, found, concurrent),
    ]
    if runtime == Runtime.VLLM.value:
        lines.append(
            f"max-num-seqs {num_seqs}: the KV cache over {1024}-token sequences (at most 256); "
            "requests beyond it wait in the queue."
        )
    else:
        lines.append(
            "The transformers runtime sizes its own cache; the memory above is vLLM's model of it, "
            "an estimate."
        )
    if performance_mode in PERFORMANCE_MODES and runtime == Runtime.VLLM.value:
        lines.append(f"kaito.sh/performance-mode {performance_mode}: {PERFORMANCE_MODES[performance_mode]}.")
    if overrides:
        lines.append(
            "inference_config.yaml overrides: " + ", ".join(sorted(flag_name(k) for k in overrides)) + "."
        )
    lines.append(
        explain.decode_formula(instance.memory_bandwidth_gbs, layout.tensor_parallel, preset.size_gib, decode)
    )
    if instance.cloud != "node":
        lines.append(explain.upstream_line(upstream, found, instance))
    memory = MemoryBreakdown(
        gpu_memory_gib=mem.gpu_memory_gib,
        usable_gib=mem.usable_gib,
        weights_gib=mem.weights_gib,
        kv_cache_gib=mem.kv_cache_gib,
        overhead_gib=mem.overhead_gib,
    )
    return Plan(
        workspace=workspace,
        preset=preset.name,
        model_id=preset.model_id,
        model_revision=preset.revision,
        runtime=runtime,
        instance_type=instance.name if instance.cloud != "node" else "",
        gpu_model=instance.gpu_model,
        gpus_per_node=layout.gpus_per_node,
        node_count=layout.nodes,
        tensor_parallel=layout.tensor_parallel,
        pipeline_parallel=layout.pipeline_parallel,
        data_parallel=layout.data_parallel,
        max_model_len=found.max_model_len,
        gpu_memory_utilization=utilization,
        memory=memory,
        kv_cache_tokens=mem.kv_tokens,
        concurrent_sequences=concurrent,
        decode_tokens_per_s=decode,
        engine_args=tuple(args),
        explanation=tuple(lines),
        upstream=upstream,
        disk_gib=preset.disk_gib,
    )


def alternatives(
    preset: ModelPreset,
    catalog: Catalog | None = None,
    *,
    max_model_len: int | None = None,
    count: int | None = None,
    cloud: str | None = None,
    exclude: Sequence[str] = (),
    limit: int = 5,
) -> list[Plan]:
    """Catalog instance types that hold ``preset``, smallest deployment first.

    Ordered by the GPU memory the deployment takes (nodes x node GPU memory), then fewer nodes,
    fewer GPUs, and name.
    """
    catalog = catalog or load_catalog()
    if preset.cpu_only:
        return []
    found: list[tuple[tuple[float, int, int, str], Plan]] = []
    for instance in catalog.gpu_instance_types():
        if instance.name in exclude or (cloud is not None and instance.cloud != cloud):
            continue
        try:
            plan = plan_on(
                preset,
                instance,
                runtime=Runtime.VLLM.value if "vllm" in preset.runtimes else None,
                max_model_len=max_model_len,
                count=count,
                catalog=catalog,
                suggest=False,
            )
        except PlanError:
            continue
        key = (plan.node_count * instance.gpu_memory_gib, plan.node_count, plan.total_gpus, instance.name)
        found.append((key, plan))
    found.sort(key=lambda item: item[0])
    return [plan for _, plan in found[:limit]]


def plan(
    workspace: Workspace,
    catalog: Catalog | None = None,
    nodes: Sequence[NodeInfo] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    model: ModelPreset | None = None,
) -> Plan:
    """Size a Workspace.

    ``nodes``: bring-your-own nodes (label dicts or InstanceTypes); when given, the nodes the
    label selector matches decide the machine type and how many nodes there can be. ``config``:
    the parsed ``inference_config.yaml``; its ``vllm:`` keys override the engine arguments last
    (a ``max-model-len`` or ``gpu-memory-utilization`` there also drives the sizing). ``model``:
    a described model for a preset name the catalog does not know.
    """
    catalog = catalog or load_catalog()
    if workspace.tuning is not None:
        raise PlanError("tuning is not supported yet: remove `tuning` and use `inference`")
    name = workspace.preset_name
    if not name:
        if workspace.inference is not None and workspace.inference.template is not None:
            return template_plan(workspace, catalog)
        raise PlanError("inference.preset.name is not set: name a preset or give inference.template")
    preset = model or catalog.find_preset(name)
    if preset is None:
        catalog.preset(name)  # raises CatalogError with suggestions
        raise CatalogError(f"unknown preset {name!r}")
    runtime = runtime_of(workspace, catalog)
    resource = workspace.resource
    count = resource.count if resource is not None else None
    type_name = resource.instanceType if resource is not None else None
    partition = resource.partition if resource is not None else None
    mode = workspace.annotation(ANNOTATION_PERFORMANCE_MODE)
    available: int | None = None
    instance: InstanceType | None = None
    head: list[str] = []
    notes: list[str] = []
    gpu_resource, gpu_amount = None, 0
    if partition is not None and not preset.cpu_only:
        part = partitioned_instance(workspace, partition, catalog, nodes)
        instance, available, gpu_resource, gpu_amount = part.instance, 1, part.resource, part.amount
        head.append(part.explanation)
        if count is not None and count != 1:
            notes.append(f"resource.count {count} is ignored: a GPU partition runs the model on one node.")
        count = None
    elif nodes is not None and not preset.cpu_only:
        instance, available = nodes_instance(workspace, nodes, catalog)
    elif type_name:
        instance = catalog.instance_type(type_name)

    def plan_with(nodes_wanted: int | None) -> Plan:
        return plan_on(
            preset,
            instance,
            runtime=runtime,
            count=nodes_wanted,
            config=config,
            workspace=workspace.name,
            catalog=catalog,
            available_nodes=available,
            performance_mode=mode,
        )

    result = plan_with(None)
    if count is not None:
        result, extra = _apply_count(result, count, available, plan_with, preset)
        notes += extra
    if gpu_resource is not None:
        result = replace(result, gpu_resource=gpu_resource, gpus_per_node=gpu_amount, instance_type="")
    notes += _option_notes(workspace, preset, result.runtime, mode)
    if head or notes:
        result = replace(result, explanation=(*head, *result.explanation, *notes), notes=tuple(notes))
    return result


def _apply_count(
    auto: Plan, count: int, available: int | None, plan_with: Any, preset: ModelPreset
) -> tuple[Plan, list[str]]:
    """Follow resource.count as upstream admits it: fewer nodes than the model needs are replaced
    by the planner's count (with a note saying why); more are honoured, as independent copies of
    the model when one node holds it (data parallel), else as more pipeline stages."""
    if count < 1:
        raise PlanError(f"resource.count must be at least 1, got {count}")
    needed = auto.node_count
    if count == needed:
        return plan_with(count), []
    if count < needed:
        return auto, [
            f"resource.count {count} is below what {preset.name} needs with max-model-len "
            f"{auto.max_model_len}: {needed} nodes are used instead. Set resource.count to {needed} "
            "(or remove it) to make this explicit."
        ]
    if needed > 1:
        return plan_with(count), []
    replicas = count if available is None else min(count, available)
    notes = []
    if replicas < count:
        notes.append(
            f"resource.count {count}: only {available} matching node(s), so {replicas} copies "
            "of the model run."
        )
    line = (
        f"resource.count {count}: one node holds {preset.name}, so {replicas} independent copies run, "
        "one per node (data parallel); the Service spreads requests over them."
    )
    planned = replace(auto, replicas=replicas, explanation=(*auto.explanation, line))
    return planned, notes


def _option_notes(workspace: Workspace, preset: ModelPreset, runtime: str, mode: str | None) -> list[str]:
    """What the Workspace asks for that this model or runtime does not use."""
    notes: list[str] = []
    inference = workspace.inference
    options = inference.preset.presetOptions if inference and inference.preset else None
    if options is not None and options.modelAccessSecret and not preset.download_token_required:
        notes.append(
            f"presetOptions.modelAccessSecret: {preset.model_id} downloads without a token; the Secret "
            "is still passed to the pod as HF_TOKEN (harmless; you may remove it)."
        )
    if mode and mode != DEFAULT_PERFORMANCE_MODE and runtime != Runtime.VLLM.value:
        notes.append(
            f"kaito.sh/performance-mode {mode} applies to vLLM only; the {runtime} runtime ignores it."
        )
    return notes


def plan_preset(
    preset: str | ModelPreset,
    instance_type: str | InstanceType | None = None,
    *,
    max_model_len: int | None = None,
    count: int | None = None,
    catalog: Catalog | None = None,
    runtime: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Plan:
    """Plan a preset (name, Hugging Face id of a catalog model, or a described model) on an instance type."""
    catalog = catalog or load_catalog()
    model = preset if isinstance(preset, ModelPreset) else catalog.preset(preset)
    instance = catalog.instance_type(instance_type) if isinstance(instance_type, str) else instance_type
    return plan_on(
        model,
        instance,
        runtime=runtime,
        max_model_len=max_model_len,
        count=count,
        config=config,
        catalog=catalog,
    )
