"""Pure helpers for the objects a Workspace owns: drift detection, field errors to conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pykaito.api.types import ConditionType
from pykaito.errors import FieldError


def contains(actual: Any, desired: Any) -> bool:
    """Whether ``actual`` holds everything ``desired`` sets (extra fields added by the server are fine).

    Mappings are compared key by key, lists element by element (same length), scalars by equality.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(key in actual and contains(actual[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    if isinstance(desired, int | float) and isinstance(actual, int | float) and not isinstance(desired, bool):
        return float(actual) == float(desired)
    return bool(actual == desired)


def drifted(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Whether a live child differs from what was rendered (edited by hand, or rendered anew)."""
    meta_d = desired.get("metadata") or {}
    meta_a = actual.get("metadata") or {}
    for key in ("labels", "annotations"):
        if not contains(meta_a.get(key) or {}, meta_d.get(key) or {}):
            return True
    body_d = {k: v for k, v in desired.items() if k not in {"metadata", "status", "apiVersion", "kind"}}
    body_a = {k: v for k, v in actual.items() if k not in {"metadata", "status", "apiVersion", "kind"}}
    return not contains(body_a, body_d)


def _claims(obj: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    result = []
    for template in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
        spec = template.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        name = (template.get("metadata") or {}).get("name")
        result.append((name, tuple(spec.get("accessModes") or ()), spec.get("storageClassName"), storage))
    return sorted(result, key=str)


def claims_changed(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Whether a StatefulSet renders volumeClaimTemplates the live one lacks or has otherwise: the
    API server refuses to change them, so the StatefulSet must be made again (the weight cache's
    access mode or size changed). Templates rendered no more are left alone: their volumes, which
    nothing mounts, go with the Workspace."""
    wanted = _claims(desired)
    return desired.get("kind") == "StatefulSet" and bool(wanted) and wanted != _claims(actual)


def condition_for(path: str) -> ConditionType:
    """Where a broken field is reported: resource.* -> ResourceReady, inference.* -> InferenceReady."""
    head = path.split(".", 1)[0].split("[", 1)[0]
    if head == "resource":
        return ConditionType.RESOURCE_READY
    if head in {"inference", "tuning"}:
        return ConditionType.INFERENCE_READY
    return ConditionType.WORKSPACE_SUCCEEDED


def describe_errors(errors: Sequence[FieldError]) -> str:
    return "; ".join(str(e) for e in errors)


def owner_key(obj: Mapping[str, Any], label: str, namespace_label: str) -> tuple[str, str] | None:
    """(namespace, workspace name) of a labelled child, or None; cluster-scoped ones name the namespace."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = labels.get(label)
    namespace = meta.get("namespace") or labels.get(namespace_label)
    if not name or not namespace:
        return None
    return str(namespace), str(name)
