"""Sizing: GPUs, nodes, tensor/pipeline/data parallel, context, KV capacity, engine arguments."""

from pykaito.planner.explain import plan_to_dict
from pykaito.planner.sizing import alternatives, plan, plan_on, plan_preset
from pykaito.planner.types import MemoryBreakdown, Plan, UpstreamEstimate
from pykaito.planner.upstream import upstream_estimate

__all__ = [
    "MemoryBreakdown",
    "Plan",
    "UpstreamEstimate",
    "alternatives",
    "plan",
    "plan_on",
    "plan_preset",
    "plan_to_dict",
    "upstream_estimate",
]
