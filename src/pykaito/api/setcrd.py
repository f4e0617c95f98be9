"""The CustomResourceDefinition for inferencesets.kaito.sh, generated from the pydantic types.

Built the same way as the Workspace's (:mod:`pykaito.api.crd`), plus what a set needs: the
``/scale`` subresource (``spec.replicas``, ``status.replicas``, ``status.selector``), ``replicas``
defaulting to 1 with a minimum of 0, the update strategy kept free-form as upstream does, and the
Replicas / ReadyReplicas / Age printer columns.

Regenerate the chart's copy with
``kaito crd --kind InferenceSet > charts/pykaito/crds/inferenceset-crd.yaml``.
"""

from __future__ import annotations

from typing import Any

from pykaito.api.crd import _PRESERVE, _Converter, crd_document, crd_file
from pykaito.api.inferenceset import (
    DEFAULT_MAX_UNAVAILABLE,
    DEFAULT_REPLICAS,
    IS_KIND,
    IS_PLURAL,
    IS_SERVED_VERSIONS,
    IS_SHORT_NAMES,
    IS_VERSION,
    InferenceSet,
)

REGENERATE = "kaito crd --kind InferenceSet > charts/pykaito/crds/inferenceset-crd.yaml"

PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "ReadyReplicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)
SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def set_openapi_schema() -> dict[str, Any]:
    """The structural openAPIV3Schema of an InferenceSet, derived from :class:`InferenceSet`."""
    root = InferenceSet.model_json_schema()
    # Free-form as upstream's (a StatefulSet update strategy): replaced below, not converted.
    root["$defs"]["UpdateStrategy"] = {"type": "object"}
    schema = _Converter(root).convert(root)
    schema.pop(_PRESERVE, None)
    properties = schema["properties"]
    properties["apiVersion"] = {"description": "kaito.sh/v1beta1 (or v1alpha1).", "type": "string"}
    properties["kind"] = {"description": "InferenceSet.", "type": "string"}
    properties["metadata"] = {"type": "object"}
    spec = properties["spec"]["properties"]
    spec["replicas"].update({"type": "integer", "minimum": 0, "default": DEFAULT_REPLICAS})
    spec["nodeCountLimit"]["minimum"] = 0
    spec["updateStrategy"] = {
        "description": "How replicas are replaced when the template changes (as a StatefulSet's).",
        "type": "object",
        _PRESERVE: True,
        "default": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": DEFAULT_MAX_UNAVAILABLE}},
    }
    spec["template"]["properties"]["metadata"] = {"type": "object", _PRESERVE: True}
    return {
        "description": (
            "An InferenceSet keeps spec.replicas Workspaces made from one template, with a scale "
            "subresource for kubectl scale and KEDA, and one Service across the ready replicas."
        ),
        "type": "object",
        "required": ["spec"],
        "properties": properties,
    }


def generate_set_crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) for inferencesets.kaito.sh."""
    return crd_document(
        kind=IS_KIND,
        plural=IS_PLURAL,
        short_names=IS_SHORT_NAMES,
        categories=("inferenceset",),
        schema=set_openapi_schema(),
        printer_columns=PRINTER_COLUMNS,
        served_versions=IS_SERVED_VERSIONS,
        storage_version=IS_VERSION,
        subresources={"status": {}, "scale": SCALE},
    )


def set_crd_yaml() -> str:
    """The CRD as deterministic YAML (the chart's ``crds/inferenceset-crd.yaml``)."""
    return crd_file(generate_set_crd(), "pykaito.api.inferenceset", REGENERATE)
