"""What a plan is asked for: the ConfigMap's engine overrides, the runtime, bring-your-own nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pykaito.api.types import Runtime, Workspace
from pykaito.catalog.loader import Catalog
from pykaito.catalog.nodes import describe_node, describe_node_labels, node_labels, node_matches
from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.errors import PlanError
from pykaito.planner.engine_args import flag_name

NodeInfo = Mapping[str, Any] | InstanceType  # a node's labels, a raw Node object, or its type


def engine_overrides(config: Mapping[str, Any] | None, runtime: str) -> dict[str, Any]:
    """The ``vllm:`` (or ``transformers:``/``llamacpp:``) section of ``inference_config.yaml``."""
    if not config:
        return {}
    section = config.get(runtime)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise PlanError(f"inference_config.yaml: '{runtime}' must be a mapping of engine arguments")
    return dict(section)


def override(overrides: Mapping[str, Any], flag: str) -> Any:
    for key, value in overrides.items():
        if flag_name(key) == flag:
            return value
    return None


def as_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"inference_config.yaml: {what} must be a whole number, got {value!r}") from exc


def as_float(value: Any, what: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"inference_config.yaml: {what} must be a number, got {value!r}") from exc
    if not 0.0 < result <= 1.0:
        raise PlanError(f"inference_config.yaml: {what} must be within (0, 1], got {value!r}")
    return result


def check_runtime(preset: ModelPreset, runtime: str) -> None:
    if runtime not in {r.value for r in Runtime}:
        raise PlanError(f"unknown runtime {runtime!r}: use one of vllm, transformers, llamacpp")
    if runtime not in preset.runtimes:
        raise PlanError(
            f"{preset.name} runs on {', '.join(preset.runtimes)}, not {runtime}: "
            f"set the kaito.sh/runtime annotation to {preset.default_runtime}"
        )


def nodes_instance(
    workspace: Workspace, nodes: Sequence[NodeInfo], catalog: Catalog
) -> tuple[InstanceType, int]:
    """The machine type of the bring-your-own nodes the Workspace selects, and how many there are."""
    selector = None
    if workspace.resource is not None and workspace.resource.labelSelector is not None:
        selector = workspace.resource.labelSelector.model_dump(exclude_none=True)
    described: list[InstanceType] = []
    for node in nodes:
        if isinstance(node, InstanceType):
            described.append(node)
            continue
        raw = "metadata" in node
        labels = node_labels(node) if raw else {str(k): str(v) for k, v in node.items()}
        if selector is None or node_matches(selector, labels):
            described.append(
                describe_node(node, catalog) if raw else describe_node_labels(labels, catalog=catalog)
            )
    if not described:
        raise PlanError("resource.labelSelector matches none of the nodes: label a GPU node to match it")
    groups: dict[tuple[int, str, float], list[InstanceType]] = {}
    for item in described:
        groups.setdefault((item.gpu_count, item.gpu_model, item.gpu_memory_gib), []).append(item)
    best = max(groups.values(), key=lambda g: (len(g), g[0].gpu_memory_gib))
    return best[0], len(best)
