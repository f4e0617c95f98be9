"""The pure core the operator calls, gathered behind one seam.

Handlers get a :class:`Toolkit` instead of importing the core functions directly, so the reconcile
logic can be exercised with the real core or with small stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pykaito.api import validation
from pykaito.api.types import Workspace
from pykaito.catalog.loader import load_catalog
from pykaito.errors import FieldError
from pykaito.manifests import render, render_nodeclaims
from pykaito.planner import sizing
from pykaito.planner.types import Plan

ValidateFn = Callable[..., list[FieldError]]
PlanFn = Callable[..., Plan]
RenderFn = Callable[..., list[dict[str, Any]]]


@dataclass(frozen=True)
class LiveContext:
    """What admission rules need from the cluster, in the Workspace's namespace.

    ``nodes``: raw Nodes the label selector matches; ``config_maps``: name -> data;
    ``secrets``: name -> the keys it holds.
    """

    nodes: Sequence[dict[str, Any]] | None  # None: none match yet (node rules are skipped)
    config_maps: dict[str, dict[str, str]]
    secrets: dict[str, set[str]]


@dataclass(frozen=True)
class Toolkit:
    """validate, plan, render and render_nodeclaims, with the catalog they share."""

    catalog: Any
    validate_fn: ValidateFn
    plan_fn: PlanFn
    render_fn: RenderFn
    render_nodeclaims_fn: RenderFn
    context_factory: Callable[..., Any] | None = None

    def validate(self, new: Workspace, old: Workspace | None, live: LiveContext) -> list[FieldError]:
        if self.context_factory is None:
            return self.validate_fn(new, old)
        context = self.context_factory(
            catalog=self.catalog,
            nodes=list(live.nodes) if live.nodes is not None else None,
            config_maps=live.config_maps,
            secrets=live.secrets,
        )
        return self.validate_fn(new, old, context=context)

    def plan(self, workspace: Workspace, nodes: Sequence[dict[str, str]] | None, config: Any = None) -> Plan:
        """Size a Workspace; ``nodes``: label dicts of bring-your-own nodes (None when provisioning)."""
        return self.plan_fn(
            workspace, self.catalog, list(nodes) if nodes is not None else None, config=config
        )

    def render(
        self,
        workspace: Workspace,
        plan: Plan,
        config_data: dict[str, Any] | None,
        images: Any = None,
        weight_cache: Any = None,
    ) -> list[dict[str, Any]]:
        extra: dict[str, Any] = {}
        if images is not None:
            extra["images"] = images
        if weight_cache is not None:
            extra["weight_cache"] = weight_cache
        return self.render_fn(workspace, plan, config_data=config_data, **extra)

    def render_nodeclaims(
        self, workspace: Workspace, plan: Plan, node_class: Any = None
    ) -> list[dict[str, Any]]:
        if node_class is None:
            return self.render_nodeclaims_fn(workspace, plan)
        return self.render_nodeclaims_fn(workspace, plan, node_class=node_class)


def default_toolkit() -> Toolkit:
    """The real core: pykaito.api.validation, pykaito.planner.sizing and pykaito.manifests."""
    return Toolkit(
        catalog=load_catalog(),
        validate_fn=validation.validate,
        plan_fn=sizing.plan,
        render_fn=render,
        render_nodeclaims_fn=render_nodeclaims,
        context_factory=validation.ValidationContext,
    )
