"""Bring-your-own nodes: what a node offers, read from its labels, and label-selector matching.

NVIDIA's GPU feature discovery labels each GPU node with ``nvidia.com/gpu.product``,
``nvidia.com/gpu.count`` and ``nvidia.com/gpu.memory`` (MiB per GPU). From those, a node becomes an
:class:`InstanceType` of cloud ``"node"`` that the planner sizes like any catalog type. Everything
here is a pure function of plain dicts, so the operator and the CLI can pass raw Kubernetes objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pykaito.catalog.loader import Catalog
from pykaito.catalog.types import InstanceType

LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
RESOURCE_GPU = "nvidia.com/gpu"

NODE_CLOUD = "node"
# Memory bandwidth (GB/s per GPU) for an unknown GPU product: low, so estimates err on the slow side.
DEFAULT_BANDWIDTH_GBS = 300.0
CPU_BANDWIDTH_GBS = 50.0

# Known GPU products, most specific first: (fragment of the normalised product label,
# memory bandwidth GB/s per GPU, memory GiB per GPU). The memory is used only when the node has
# no nvidia.com/gpu.memory label.
_GPU_PRODUCTS: tuple[tuple[str, float, float], ...] = (
    ("H200", 4800, 141),
    ("H100-NVL", 3900, 94),
    ("H100-PCIE", 2000, 80),
    ("H100", 3350, 80),
    ("A100-SXM4-80GB", 2039, 80),
    ("A100-80GB-PCIE", 1935, 80),
    ("A100-PCIE-80GB", 1935, 80),
    ("A100-SXM4-40GB", 1555, 40),
    ("A100-PCIE-40GB", 1555, 40),
    ("A100", 1555, 40),
    ("L40S", 864, 48),
    ("L40", 864, 48),
    ("L4", 300, 24),
    ("A10G", 600, 24),
    ("A10", 600, 24),
    ("V100", 900, 16),
    ("T4", 320, 16),
    ("RTX-4090", 1008, 24),
    ("RTX-3090", 936, 24),
)


def _normalise(product: str) -> str:
    return product.upper().replace(" ", "-").replace("_", "-")


def gpu_product_figures(product: str) -> tuple[float, float | None]:
    """(memory bandwidth GB/s, memory GiB or None) per GPU for a ``nvidia.com/gpu.product`` value."""
    normalised = _normalise(product)
    for fragment, bandwidth, memory in _GPU_PRODUCTS:
        if fragment in normalised:
            return bandwidth, memory
    return DEFAULT_BANDWIDTH_GBS, None


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def describe_node_labels(
    labels: Mapping[str, str],
    name: str = "",
    catalog: Catalog | None = None,
    gpu_capacity: int | None = None,
) -> InstanceType:
    """What a node offers, from its labels.

    A ``node.kubernetes.io/instance-type`` that names a catalog type wins (its figures are known).
    Otherwise the NVIDIA labels give the GPU model, count and memory; ``gpu_capacity`` (the node's
    ``nvidia.com/gpu`` capacity) stands in for a missing count label. ``gpu_memory_gib`` is 0.0
    when neither the memory label nor a known product tells it. A node without GPUs is a CPU-only
    type (``gpu_count == 0``).
    """
    instance_type = labels.get(LABEL_INSTANCE_TYPE)
    if catalog is not None and instance_type and instance_type in catalog.instance_types:
        return catalog.instance_types[instance_type]

    product = labels.get(LABEL_GPU_PRODUCT, "")
    count = _int_label(labels, LABEL_GPU_COUNT)
    if count is None:
        count = gpu_capacity if gpu_capacity is not None else (1 if product else 0)
    node_name = name or instance_type or "node"
    if count <= 0:
        return InstanceType(
            name=node_name,
            cloud=NODE_CLOUD,
            gpu_count=0,
            gpu_model="none",
            gpu_memory_gib=0.0,
            memory_bandwidth_gbs=CPU_BANDWIDTH_GBS,
            description="CPU-only node (no NVIDIA GPU labels)",
        )

    bandwidth, product_memory = gpu_product_figures(product) if product else (DEFAULT_BANDWIDTH_GBS, None)
    memory_mib = _int_label(labels, LABEL_GPU_MEMORY)
    per_gpu_gib = memory_mib / 1024 if memory_mib is not None and memory_mib > 0 else product_memory or 0.0
    model = product or "unknown"
    utilization = 0.82 if _normalise(model).endswith("A10") else 0.84
    return InstanceType(
        name=node_name,
        cloud=NODE_CLOUD,
        gpu_count=count,
        gpu_model=model,
        gpu_memory_gib=round(per_gpu_gib * count, 2),
        memory_bandwidth_gbs=bandwidth,
        gpu_memory_utilization=utilization,
        description=f"bring-your-own node: {count} x {model}",
    )


def describe_node(node: Mapping[str, Any], catalog: Catalog | None = None) -> InstanceType:
    """What a raw Kubernetes Node object offers (its labels, and its ``nvidia.com/gpu`` capacity)."""
    labels = node_labels(node)
    capacity = _mapping(_mapping(node.get("status")).get("capacity"))
    gpu_capacity: int | None = None
    raw = capacity.get(RESOURCE_GPU)
    if raw is not None:
        try:
            gpu_capacity = int(str(raw))
        except ValueError:
            gpu_capacity = None
    return describe_node_labels(labels, name=node_name(node), catalog=catalog, gpu_capacity=gpu_capacity)


def node_labels(node: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a raw Kubernetes object (empty when it has none)."""
    labels = _mapping(_mapping(node.get("metadata")).get("labels"))
    return {str(k): str(v) for k, v in labels.items()}


def node_name(node: Mapping[str, Any]) -> str:
    """The name of a raw Kubernetes object (empty when it has none)."""
    return str(_mapping(node.get("metadata")).get("name") or "")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def node_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a Kubernetes label selector (``matchLabels``/``matchExpressions``).

    As in Kubernetes, an empty selector matches every node and a missing one (None) matches none.
    Operators are In, NotIn, Exists and DoesNotExist; an unknown operator matches nothing.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key = requirement.get("key", "")
        operator = requirement.get("operator")
        values = set(requirement.get("values") or [])
        present = key in labels
        if operator == "In":
            ok = present and labels[key] in values
        elif operator == "NotIn":
            ok = not present or labels[key] not in values
        elif operator == "Exists":
            ok = present
        elif operator == "DoesNotExist":
            ok = not present
        else:
            ok = False
        if not ok:
            return False
    return True
