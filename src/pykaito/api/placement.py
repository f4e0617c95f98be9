"""Where a Workspace runs: the rules on ``resource``.

An instance type must be known (or an Azure GPU size the catalog does not list yet), fit the
model's weights in GPU memory (unless the bypass annotation is set), and suit the preset (CPU
presets take no GPU type; GPU presets need one). Without an instance type, the label selector
picks the user's own nodes; when those nodes are known, at least one must match and, for a GPU
model, have GPUs enough.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pykaito.api.loading import field_path
from pykaito.api.names import is_label_key, is_label_value
from pykaito.api.types import ANNOTATION_BYPASS_RESOURCE_CHECKS, LabelSelector, Workspace
from pykaito.catalog.loader import Catalog, closest, did_you_mean
from pykaito.catalog.nodes import describe_node, node_labels, node_matches, node_name
from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.errors import FieldError

_AZURE_GPU_SKU = re.compile(r"^Standard_N")
BYPASS_HINT = f'set the annotation {ANNOTATION_BYPASS_RESOURCE_CHECKS}: "True" to skip this check'
# With resource.count unset the planner chooses the node count, up to this many nodes.
MAX_AUTO_NODES = 16


def check_resource(
    ws: Workspace,
    preset: ModelPreset | None,
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]] | None = None,
) -> list[FieldError]:
    """The rules on ``resource``: count, selector, instance type, GPU memory, and own nodes."""
    resource = ws.resource
    instance_type = resource.instanceType if resource is not None else None
    selector = resource.labelSelector if resource is not None else None
    errors: list[FieldError] = []
    if resource is not None and resource.count is not None and resource.count < 1:
        errors.append(
            FieldError("resource.count", f"{resource.count} nodes: use 1 or more (or leave it out)")
        )
    if selector is not None:
        errors += _check_selector(selector)
    if instance_type:
        errors += _check_instance_type(ws, instance_type, preset, catalog)
        return errors
    if selector is None:
        errors.append(
            FieldError(
                "resource.labelSelector",
                "required without resource.instanceType: select your own nodes with matchLabels "
                "(bring your own nodes), or set resource.instanceType to have nodes provisioned",
            )
        )
        return errors
    if nodes is not None:
        errors += _check_own_nodes(ws, selector, preset, catalog, nodes)
    return errors


def _check_selector(selector: LabelSelector) -> list[FieldError]:
    errors: list[FieldError] = []
    base = ("resource", "labelSelector")
    for key, value in (selector.matchLabels or {}).items():
        path = field_path((*base, "matchLabels", key))
        if not is_label_key(key):
            errors.append(
                FieldError(path, f"{key!r} is not a valid label key: use [prefix/]name, name <= 63 chars")
            )
        if not is_label_value(value):
            errors.append(
                FieldError(
                    path, f"{value!r} is not a valid label value: letters, digits, '-', '_', '.', <= 63"
                )
            )
    for i, req in enumerate(selector.matchExpressions or []):
        path = field_path((*base, "matchExpressions", i, "values"))
        if req.operator in ("In", "NotIn") and not req.values:
            errors.append(FieldError(path, f"operator {req.operator} needs at least one value: add values"))
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            errors.append(FieldError(path, f"operator {req.operator} takes no values: remove them"))
    return errors


def fitting_instance_types(
    catalog: Catalog, need_gib: float, cloud: str | None, limit: int = 3
) -> list[InstanceType]:
    """GPU instance types with at least ``need_gib`` of GPU memory per node, smallest first.

    Types from ``cloud`` come first when any of them fits; otherwise any cloud's.
    """
    fits = [t for t in catalog.gpu_instance_types() if t.gpu_memory_gib >= need_gib]
    same_cloud = [t for t in fits if t.cloud == cloud]
    chosen = same_cloud or fits
    return sorted(chosen, key=lambda t: (t.gpu_memory_gib, t.gpu_count, t.name))[:limit]


def _fit_hint(catalog: Catalog, need_gib: float, cloud: str | None) -> str:
    fits = fitting_instance_types(catalog, need_gib, cloud)
    if not fits:
        return "no single catalog instance type has that much"
    listed = ", ".join(f"{t.name} ({t.gpu_count} x {t.gpu_model}, {t.gpu_memory_gib:g} GiB)" for t in fits)
    return f"instance types that fit: {listed}"


def _check_instance_type(
    ws: Workspace, name: str, preset: ModelPreset | None, catalog: Catalog
) -> list[FieldError]:
    path = "resource.instanceType"
    known = catalog.instance_types.get(name)
    if known is None:
        if _AZURE_GPU_SKU.match(name):
            # An Azure GPU size the catalog does not list yet: upstream lets it through.
            return [_cpu_preset_on_gpu(preset, name)] if preset is not None and preset.cpu_only else []
        suggestions = closest(name, catalog.instance_types)
        return [
            FieldError(
                path,
                f"unknown instance type {name!r}{did_you_mean(suggestions)}: "
                "`kaito instance-types` lists them; leave it out to use your own nodes (labelSelector)",
            )
        ]
    if preset is None:
        if not known.has_gpu and ws.inference is not None and ws.inference.template is None:
            return [
                FieldError(path, f"{name} has no GPU and this model runs on vLLM: use a GPU instance type")
            ]
        return []
    if preset.cpu_only:
        return [_cpu_preset_on_gpu(preset, name)] if known.has_gpu else []
    if not known.has_gpu:
        return [
            FieldError(
                path,
                f"{name} has no GPU and {preset.name} needs one; "
                f"{_fit_hint(catalog, preset.size_gib, known.cloud)}",
            )
        ]
    if ws.annotation(ANNOTATION_BYPASS_RESOURCE_CHECKS) is not None:
        return []
    # As upstream, resource.count does not limit this check: a count below what the model needs is
    # admitted and the planner uses its own node count (saying so in the plan and an Event).
    have = MAX_AUTO_NODES * known.gpu_memory_gib
    if have >= preset.size_gib:
        return []
    return [
        FieldError(
            path,
            f"{preset.name} needs {preset.size_gib:.1f} GiB of GPU memory for its weights; even "
            f"{MAX_AUTO_NODES} x {name} ({have:g} GiB) fall short: "
            f"{_fit_hint(catalog, preset.size_gib, known.cloud)}; or {BYPASS_HINT}",
        )
    ]


def _cpu_preset_on_gpu(preset: ModelPreset, name: str) -> FieldError:
    return FieldError(
        "resource.instanceType",
        f"{preset.name} runs on CPU ({', '.join(preset.runtimes)}) and needs no GPU instance type like "
        f"{name}: remove instanceType and select your nodes with labelSelector, or use a CPU type "
        "such as Standard_D4s_v5",
    )


def _check_own_nodes(
    ws: Workspace,
    selector: LabelSelector,
    preset: ModelPreset | None,
    catalog: Catalog,
    all_nodes: Sequence[Mapping[str, Any]],
) -> list[FieldError]:
    selector_dict = selector.model_dump(exclude_none=True)
    nodes = [n for n in all_nodes if isinstance(n, Mapping) and node_matches(selector_dict, node_labels(n))]
    shown = _describe_selector(selector)
    if not nodes:
        return [
            FieldError(
                "resource.labelSelector",
                f"no node matches {shown}: label the nodes to use (kubectl label node <node> "
                f"{_first_label(selector)}), or set resource.instanceType to have nodes provisioned",
            )
        ]
    errors: list[FieldError] = []
    names = {node_name(n) for n in nodes}
    for i, preferred in enumerate((ws.resource.preferredNodes if ws.resource else None) or []):
        if preferred not in names:
            errors.append(
                FieldError(
                    f"resource.preferredNodes[{i}]", f"node {preferred!r} does not match {shown}: label it"
                )
            )
    needs_gpu = preset is not None and not preset.cpu_only
    needs_gpu = needs_gpu or (preset is None and ws.inference is not None and ws.inference.template is None)
    if not needs_gpu:
        return errors
    described = [(node_name(n), describe_node(n, catalog)) for n in nodes]
    gpu_nodes = [(name, d) for name, d in described if d.has_gpu]
    if not gpu_nodes:
        errors.append(
            FieldError(
                "resource.labelSelector",
                f"none of the {len(nodes)} node(s) matching {shown} has an NVIDIA GPU (labels "
                "nvidia.com/gpu.product and nvidia.com/gpu.count from GPU feature discovery): "
                "select GPU nodes, or use a CPU preset such as smollm2-135m-instruct",
            )
        )
        return errors
    bypass = ws.annotation(ANNOTATION_BYPASS_RESOURCE_CHECKS) is not None
    if preset is None or bypass or any(d.gpu_memory_gib <= 0 for _, d in gpu_nodes):
        return errors
    # As upstream, every matching node counts (resource.count does not limit them).
    best = sorted(gpu_nodes, key=lambda pair: pair[1].gpu_memory_gib, reverse=True)
    have = sum(d.gpu_memory_gib for _, d in best)
    if have < preset.size_gib:
        offered = ", ".join(
            f"{name}: {d.gpu_count} x {d.gpu_model}, {d.gpu_memory_gib:g} GiB" for name, d in best
        )
        errors.append(
            FieldError(
                "resource.labelSelector",
                f"{preset.name} needs {preset.size_gib:.1f} GiB of GPU memory for its weights; the "
                f"selected node(s) offer {have:g} GiB ({offered}): add larger GPU nodes "
                f"or label more nodes to match, or {BYPASS_HINT}",
            )
        )
    return errors


def _describe_selector(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in (selector.matchLabels or {}).items()]
    for req in selector.matchExpressions or []:
        values = ",".join(req.values or [])
        parts.append(f"{req.key} {req.operator} ({values})" if values else f"{req.key} {req.operator}")
    return "labelSelector {" + ", ".join(parts) + "}" if parts else "the empty labelSelector"


def _first_label(selector: LabelSelector) -> str:
    for key, value in (selector.matchLabels or {}).items():
        return f"{key}={value}"
    return "<key>=<value>"
