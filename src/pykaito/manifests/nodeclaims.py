"""Karpenter NodeClaims: one per node a Workspace's plan needs, when nodes are provisioned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pykaito.api.types import (
    ANNOTATION_NODE_CLASS_NAME,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    Workspace,
)
from pykaito.manifests.pod import disk_gib, is_cpu
from pykaito.planner.types import Plan

NODECLAIM_API_VERSION = "karpenter.sh/v1"
NODECLAIM_KIND = "NodeClaim"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_OS = "kubernetes.io/os"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeClassRef:
    """The provider's node class that NodeClaims refer to (AKS by default)."""

    group: str = "karpenter.azure.com"
    kind: str = "AKSNodeClass"
    name: str = "default"

    def to_dict(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "name": self.name}


def nodeclaim_name(workspace: Workspace, index: int) -> str:
    """``ws`` + 10 hex digits of sha256(namespace/name/index): stable, unique, a DNS-1123 label."""
    key = f"{workspace.namespace}/{workspace.name}/{index}"
    return "ws" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]


RESTRICTED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io", "karpenter.sh")


def _restricted(key: str) -> bool:
    """Whether Karpenter refuses to set a label with this key (its domain is Kubernetes' own)."""
    domain = key.split("/", 1)[0] if "/" in key else ""
    return any(domain == d or domain.endswith("." + d) for d in RESTRICTED_LABEL_DOMAINS)


def nodeclaim_labels(workspace: Workspace) -> dict[str, str]:
    """The workspace labels plus labelSelector.matchLabels, so the pods' node affinity matches.

    Karpenter copies them onto the node; labels under kubernetes.io are left to the node itself.
    """
    labels: dict[str, str] = {}
    selector = workspace.resource.labelSelector if workspace.resource else None
    if selector is not None and selector.matchLabels:
        labels.update((k, v) for k, v in sorted(selector.matchLabels.items()) if not _restricted(k))
    labels[LABEL_WORKSPACE] = workspace.name
    labels[LABEL_WORKSPACE_NAMESPACE] = workspace.namespace
    return labels


def render_nodeclaims(
    workspace: Workspace, plan: Plan, *, node_class: NodeClassRef | None = None
) -> list[dict[str, Any]]:
    """One NodeClaim per node of the plan; none for bring-your-own nodes (no instance type).

    NodeClaims are cluster-scoped, so they carry labels rather than an owner reference; the
    Workspace's finalizer deletes them.
    """
    if not plan.instance_type:
        return []
    ref = (node_class or NodeClassRef()).to_dict()
    chosen_class = workspace.annotation(ANNOTATION_NODE_CLASS_NAME)
    if chosen_class:  # kaito.sh/node-class-name picks another NodeClass of the same kind
        ref["name"] = chosen_class
    claims: list[dict[str, Any]] = []
    for index in range(plan.total_nodes):
        spec: dict[str, Any] = {"nodeClassRef": dict(ref)}
        if not is_cpu(plan):
            spec["taints"] = [dict(GPU_TAINT)]
        spec["requirements"] = [
            {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [plan.instance_type]},
            {"key": LABEL_OS, "operator": "In", "values": ["linux"]},
        ]
        spec["resources"] = {"requests": {"storage": f"{disk_gib(plan)}Gi"}}
        claims.append(
            {
                "apiVersion": NODECLAIM_API_VERSION,
                "kind": NODECLAIM_KIND,
                "metadata": {"name": nodeclaim_name(workspace, index), "labels": nodeclaim_labels(workspace)},
                "spec": spec,
            }
        )
    return claims
