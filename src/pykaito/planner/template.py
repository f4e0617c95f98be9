"""The plan of a template Workspace: the user's own pod template runs as written, unsized.

There is no model to size, so the plan only carries what the cluster side needs: how many nodes
(``resource.count``, default 1), the instance type to provision and the GPUs a node of it has.
"""

from __future__ import annotations

from pykaito.api.types import Workspace
from pykaito.catalog.loader import Catalog
from pykaito.planner.types import MemoryBreakdown, Plan

TEMPLATE_RUNTIME = "template"
NO_MEMORY = MemoryBreakdown(
    gpu_memory_gib=0.0, usable_gib=0.0, weights_gib=0.0, kv_cache_gib=0.0, overhead_gib=0.0
)


def template_plan(workspace: Workspace, catalog: Catalog) -> Plan:
    """Nodes for a template Workspace: ``resource.count`` of ``resource.instanceType`` (or own nodes)."""
    resource = workspace.resource
    count = (resource.count if resource is not None else None) or 1
    type_name = (resource.instanceType if resource is not None else None) or ""
    instance = catalog.instance_types.get(type_name) if type_name else None
    gpus = instance.gpu_count if instance is not None else 0
    where = f"{count} x {type_name}" if type_name else f"{count} of your own node(s)"
    return Plan(
        workspace=workspace.name,
        preset="",
        model_id="",
        runtime=TEMPLATE_RUNTIME,
        instance_type=type_name,
        gpu_model=instance.gpu_model if instance is not None else "",
        gpus_per_node=gpus,
        node_count=1,
        tensor_parallel=1,
        pipeline_parallel=1,
        data_parallel=1,
        max_model_len=0,
        gpu_memory_utilization=0.0,
        memory=NO_MEMORY,
        kv_cache_tokens=0,
        concurrent_sequences=0.0,
        decode_tokens_per_s=0.0,
        engine_args=(),
        explanation=(
            f"inference.template: your pod template runs as written on {where}, one pod per node; "
            "pykaito does not size it (no preset to size).",
        ),
        disk_gib=0.0,
        replicas=count,
    )
