"""The StatefulSet of a template Workspace: the user's pod template, as written, placed like upstream.

The template is copied; pykaito adds the ``kaito.sh/workspace`` label (the Services and the status
find the pods by it), node affinity from ``resource.labelSelector`` and the GPU tolerations, and runs
one pod per planned node.
"""

from __future__ import annotations

import copy
from typing import Any

from pykaito.api.types import Workspace
from pykaito.manifests import pod
from pykaito.manifests.meta import (
    ANNOTATION_REVISION,
    headless_name,
    object_meta,
    selector_labels,
    sha256_hex,
)
from pykaito.planner.types import Plan


def template_pod(workspace: Workspace) -> dict[str, Any]:
    """The pod template with pykaito's label, node affinity and tolerations added."""
    raw = workspace.inference.template if workspace.inference is not None else None
    template: dict[str, Any] = copy.deepcopy(dict(raw or {}))
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **selector_labels(workspace)}
    template["metadata"] = metadata
    spec = dict(template.get("spec") or {})
    affinity = pod.node_affinity(workspace)
    if affinity is not None:
        spec["affinity"] = {**(spec.get("affinity") or {}), **affinity}
    tolerations = list(spec.get("tolerations") or [])
    tolerations += [dict(t) for t in pod.GPU_TOLERATIONS if t not in tolerations]
    spec["tolerations"] = tolerations
    template["spec"] = spec
    return template


def template_statefulset(workspace: Workspace, plan: Plan) -> dict[str, Any]:
    template = template_pod(workspace)
    metadata = object_meta(workspace, workspace.name)
    metadata["annotations"] = {
        ANNOTATION_REVISION: sha256_hex({"template": template, "replicas": plan.total_nodes})
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "replicas": plan.total_nodes,
            "podManagementPolicy": "Parallel",
            "serviceName": headless_name(workspace),
            "selector": {"matchLabels": selector_labels(workspace)},
            "template": template,
        },
    }
