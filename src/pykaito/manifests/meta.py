"""Names, labels, owner references and hashes shared by every rendered object."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from pykaito.api.inferenceset import LABEL_CREATED_BY
from pykaito.api.types import API_VERSION, KIND, LABEL_WORKSPACE, Workspace
from pykaito.planner.types import Plan

ANNOTATION_REVISION = "workspace.kaito.io/revision"
"""sha256 of the rendered pod template and the plan: the operator re-applies when it changes."""
ANNOTATION_CONFIG_HASH = "kaito.sh/config-hash"
"""sha256 of the inference ConfigMap's data, on the pod template so a config change rolls the pods."""
ANNOTATION_API_KEY_SECRET = "kaito.sh/api-key-secret"
"""Optional Workspace annotation: the Secret (key ``KAITO_API_KEY``) whose value clients must send."""
API_KEY_SECRET_KEY = "KAITO_API_KEY"
MODEL_ACCESS_SECRET_KEY = "HF_TOKEN"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "pykaito"
LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def plan_fingerprint(plan: Plan) -> dict[str, Any]:
    """The plan as plain data, without its prose explanation (wording is not a deployment change)."""
    data = dataclasses.asdict(plan)
    data.pop("explanation", None)
    return data


def dns_label(prefix: str, name: str) -> str:
    """``prefix-name`` as a DNS-1123 label (at most 63 characters), shortened with a hash if needed."""
    candidate = f"{prefix}-{name}".lower()
    if len(candidate) <= 63 and _DNS_LABEL.match(candidate):
        return candidate
    digest = hashlib.sha256(candidate.encode("utf-8")).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]", "-", candidate)[: 63 - 9].strip("-")
    return f"{cleaned}-{digest}"


def headless_name(workspace: Workspace) -> str:
    return f"{workspace.name}-headless"


def ray_head_address(workspace: Workspace) -> str:
    """The Ray head's stable DNS name (pod 0 behind the headless Service)."""
    ws = workspace.name
    return f"{ws}-0.{headless_name(workspace)}.{workspace.namespace}.svc.cluster.local"


def selector_labels(workspace: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: workspace.name}


def pod_labels(workspace: Workspace) -> dict[str, str]:
    """The pods' labels: the selector, plus the owning InferenceSet's so one Service spans its replicas."""
    labels = selector_labels(workspace)
    owner_set = (workspace.metadata.labels or {}).get(LABEL_CREATED_BY)
    if owner_set:
        labels[LABEL_CREATED_BY] = owner_set
    return labels


def object_labels(workspace: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: workspace.name, LABEL_MANAGED_BY: MANAGED_BY}


def controller_reference(api_version: str, kind: str, name: str, uid: object) -> dict[str, Any] | None:
    """An object as controller owner: deleting it garbage-collects what it owns.

    ``None`` without a uid (an object rendered from a file): the API server refuses an owner
    reference without one.
    """
    if not uid:
        return None
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": str(uid),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_reference(workspace: Workspace) -> dict[str, Any] | None:
    """The Workspace as controller owner (``None`` until it has a uid)."""
    return controller_reference(API_VERSION, KIND, workspace.name, getattr(workspace.metadata, "uid", None))


def owned_meta(
    name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any] | None
) -> dict[str, Any]:
    """Metadata of an object ``owner`` controls (no ownerReferences without an owner)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def object_meta(workspace: Workspace, name: str) -> dict[str, Any]:
    return owned_meta(name, workspace.namespace, object_labels(workspace), owner_reference(workspace))
