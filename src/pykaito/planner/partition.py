"""Sizing on a GPU partition: one MIG slice, or some of a node's whole GPUs.

A partition becomes the machine the planner sizes for: a MIG slice is a one-GPU machine with the
slice's memory and its share of the bandwidth; an accelerator partition is the node's type cut to
``count`` GPUs. Either way the model runs on one node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pykaito.api.types import PartitionSpec, Workspace
from pykaito.catalog.loader import Catalog
from pykaito.catalog.mig import MIG_COMPUTE_SLICES, gpus_offering, mig_gpu, parse_profile
from pykaito.catalog.nodes import NODE_CLOUD, RESOURCE_GPU, gpu_product_figures
from pykaito.catalog.types import InstanceType
from pykaito.errors import PlanError
from pykaito.planner.inputs import NodeInfo, nodes_instance


@dataclass(frozen=True)
class Partitioned:
    """The machine one partition amounts to, the resource a pod asks for, and why."""

    instance: InstanceType
    resource: str  # nvidia.com/gpu or nvidia.com/mig-<profile>
    amount: int  # how many of ``resource`` the pod requests
    explanation: str


def partitioned_instance(
    workspace: Workspace, partition: PartitionSpec, catalog: Catalog, nodes: Sequence[NodeInfo] | None
) -> Partitioned:
    """The machine a partition gives the model (MIG needs no nodes; accelerator sizes from them)."""
    node = nodes_instance(workspace, nodes, catalog)[0] if nodes else None
    if partition.mode == "mig":
        return _mig(partition, node)
    if node is None:
        raise PlanError(
            "resource.partition mode accelerator takes GPUs of your own nodes: pass the nodes "
            "(kubectl get nodes -o yaml > nodes.yaml; --nodes nodes.yaml) to size it"
        )
    count = partition.count or 1
    if count > node.gpu_count:
        raise PlanError(
            f"resource.partition.count {count}: the selected nodes have {node.gpu_count} GPUs each"
        )
    instance = replace(
        node,
        name=f"{count} of {node.gpu_count} x {node.gpu_model}",
        gpu_count=count,
        gpu_memory_gib=node.per_gpu_memory_gib * count,
    )
    why = (
        f"GPU partition (accelerator): {count} whole {node.gpu_model} GPU{'s' if count > 1 else ''} "
        f"of a {node.gpu_count}-GPU node, {instance.gpu_memory_gib:g} GiB together."
    )
    return Partitioned(instance, RESOURCE_GPU, count, why)


def _mig(partition: PartitionSpec, node: InstanceType | None) -> Partitioned:
    try:
        profile = parse_profile(partition.profile or "")
    except ValueError as exc:
        raise PlanError(f"resource.partition.profile: {exc}") from exc
    offering = gpus_offering(profile.name)
    gpu = mig_gpu(node.gpu_model, node.per_gpu_memory_gib) if node is not None else None
    if gpu is None:
        gpu = offering[0] if offering else "GPU"
    bandwidth = node.memory_bandwidth_gbs if node is not None else gpu_product_figures(gpu)[0]
    share = profile.compute_slices / MIG_COMPUTE_SLICES
    instance = InstanceType(
        name=f"{gpu} MIG {profile.name}",
        cloud=NODE_CLOUD,
        gpu_count=1,
        gpu_model=f"{gpu} MIG {profile.name}",
        gpu_memory_gib=round(profile.memory_gib, 2),
        memory_bandwidth_gbs=bandwidth * share,
    )
    why = (
        f"GPU partition (MIG): one {profile.name} slice of an {gpu} — {profile.compute_slices} of "
        f"{MIG_COMPUTE_SLICES} compute slices and {profile.memory_gb:g} GB ({profile.memory_gib:.1f} GiB) "
        f"of memory, about {share:.0%} of the GPU's bandwidth; the pod requests {profile.resource}: 1 "
        "and the model runs on that slice alone (no tensor parallel across slices)."
    )
    return Partitioned(instance, profile.resource, 1, why)
