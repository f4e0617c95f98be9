"""The CustomResourceDefinition for workspaces.kaito.sh, generated from the pydantic types.

The types in :mod:`pykaito.api.types` are the one source of truth: their JSON schema is walked,
``$ref`` resolved and pydantic's ``anyOf [X, null]`` folded into ``X`` (optional fields are simply
not required), giving the structural OpenAPI v3 schema Kubernetes wants. Free-form parts (the pod
``template``, an adapter's ``volumeSource``) keep unknown fields; ``metadata`` is left to the API
server.

Regenerate the chart's copy with ``kaito crd > charts/pykaito/crds/workspace-crd.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from pykaito.api.types import (
    CATEGORIES,
    CONDITION_BENCHMARK_COMPLETED,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    ConditionType,
    PerformanceMetric,
    Workspace,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
SERVED_VERSIONS = ("v1beta1", "v1alpha1")
STORAGE_VERSION = "v1beta1"
REGENERATE = "kaito crd > charts/pykaito/crds/workspace-crd.yaml"

_PRESERVE = "x-kubernetes-preserve-unknown-fields"
# Keys of JSON schema that a structural OpenAPI v3 schema keeps.
_KEPT = ("description", "type", "format", "enum", "minimum", "maximum", "pattern", "minLength", "maxLength")


def _condition_column(condition: ConditionType) -> dict[str, Any]:
    return {
        "name": condition.value,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition.value}")].status',
    }


_WIDE_METRICS = (
    (PerformanceMetric.PEAK_TOKENS_PER_MINUTE, "PeakTokensPerMin"),
    (PerformanceMetric.TIME_TO_FIRST_TOKEN, "TTFT-ms"),
    (PerformanceMetric.TOKENS_PER_SECOND_PER_STREAM, "TokensPerSecPerStream"),
)


def _metric_column(metric: PerformanceMetric, label: str) -> dict[str, Any]:
    """A status.performance figure, shown by ``kubectl get -o wide`` only (priority 1)."""
    return {
        "name": label,
        "type": "string",
        "jsonPath": f".status.performance.metrics.{metric.value}.value",
        "description": f"status.performance.metrics.{metric.value} from the post-load benchmark.",
        "priority": 1,
    }


# Upstream's columns; the post-load benchmark's figures only in the wide view (priority 1).
PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
    _condition_column(ConditionType.RESOURCE_READY),
    _condition_column(ConditionType.INFERENCE_READY),
    _condition_column(ConditionType.WORKSPACE_SUCCEEDED),
    {"name": "TargetNodeCount", "type": "integer", "jsonPath": ".status.targetNodeCount"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    *(_metric_column(metric, label) for metric, label in _WIDE_METRICS),
    {
        "name": "Benchmark",
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{CONDITION_BENCHMARK_COMPLETED}")].status',
        "description": "Whether the post-load benchmark's result is recorded (BenchmarkCompleted).",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            # A model's docstring describes the Python class, not the field: leave it out.
            merged = {k: v for k, v in self.defs[name].items() if k != "description"}
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            node = merged
        return node

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        node = self.resolve(node)
        variants = node.get("anyOf")
        if variants is not None:
            non_null = [v for v in variants if v.get("type") != "null"]
            if len(non_null) != 1:
                raise ValueError(f"cannot express a union of {len(non_null)} types structurally: {node}")
            inner = {k: v for k, v in node.items() if k != "anyOf"}
            inner.update(self.resolve(non_null[0]))
            return self.convert(inner)

        out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
        if node.get("default") not in (None, ""):
            out["default"] = node["default"]
        if "const" in node:
            out["enum"] = [node["const"]]
        kind = node.get("type")
        if kind == "object":
            properties = node.get("properties")
            extra = node.get("additionalProperties")
            if properties:
                out["properties"] = {k: self.convert(v) for k, v in properties.items()}
                required = [k for k in node.get("required", []) if k in properties]
                if required:
                    out["required"] = required
                if extra is True or isinstance(extra, dict):
                    out[_PRESERVE] = True
            elif isinstance(extra, dict) and extra:
                out["additionalProperties"] = self.convert(extra)
            else:
                out[_PRESERVE] = True
        elif kind == "array":
            out["items"] = self.convert(node.get("items", {}))
        elif kind is None and "enum" not in out:
            out["type"] = "object"
            out[_PRESERVE] = True
        return out


def openapi_schema() -> dict[str, Any]:
    """The structural openAPIV3Schema of a Workspace, derived from :class:`Workspace`."""
    root = Workspace.model_json_schema()
    converter = _Converter(root)
    schema = converter.convert(root)
    schema.pop(_PRESERVE, None)
    properties = schema["properties"]
    properties["apiVersion"] = {
        "description": "The versioned schema of this object: kaito.sh/v1beta1.",
        "type": "string",
    }
    properties["kind"] = {"description": "The kind of this object: Workspace.", "type": "string"}
    properties["metadata"] = {"type": "object"}
    return {
        "description": (
            "A Workspace names a model preset (or a pod template) and the GPU nodes to run it on; "
            "the operator sizes, deploys and serves it behind an OpenAI-compatible endpoint."
        ),
        "type": "object",
        "properties": properties,
    }


def crd_document(
    *,
    kind: str,
    plural: str,
    short_names: Sequence[str],
    categories: Sequence[str],
    schema: dict[str, Any],
    printer_columns: Sequence[dict[str, Any]],
    served_versions: Sequence[str],
    storage_version: str,
    subresources: dict[str, Any],
) -> dict[str, Any]:
    """A kaito.sh CustomResourceDefinition (apiextensions.k8s.io/v1): one schema for every served version."""
    versions = [
        {
            "name": version,
            "served": True,
            "storage": version == storage_version,
            "additionalPrinterColumns": copy.deepcopy(list(printer_columns)),
            "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
            "subresources": copy.deepcopy(subresources),
        }
        for version in served_versions
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "categories": list(categories),
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "shortNames": list(short_names),
                "singular": kind.lower(),
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }


def generate_crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) for workspaces.kaito.sh."""
    return crd_document(
        kind=KIND,
        plural=PLURAL,
        short_names=SHORT_NAMES,
        categories=CATEGORIES,
        schema=openapi_schema(),
        printer_columns=PRINTER_COLUMNS,
        served_versions=SERVED_VERSIONS,
        storage_version=STORAGE_VERSION,
        subresources={"status": {}},
    )


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated values out in full: no ``&id001`` anchors in a file people read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_file(crd: dict[str, Any], source: str, regenerate: str) -> str:
    """A CRD as deterministic YAML, headed by where it comes from and how to regenerate it."""
    header = f"# Generated from {source}; regenerate with `{regenerate}`.\n"
    body = yaml.dump(crd, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=100)
    return header + body


def crd_yaml() -> str:
    """The CRD as deterministic YAML (the chart's ``crds/workspace-crd.yaml``)."""
    return crd_file(generate_crd(), "pykaito.api.types", REGENERATE)


def strict_json_schema(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON schema that checks a Workspace as the API server does with strict field validation.

    The structural schema cannot say "no other fields" (Kubernetes prunes or, with
    ``--validate=strict``, refuses them); this adds ``additionalProperties: false`` wherever
    unknown fields are not preserved, so a plain JSON-schema validator rejects them too.
    """

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        out = dict(node)
        if "properties" in node:
            out["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            if not node.get(_PRESERVE):
                out["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = walk(node["additionalProperties"])
        if "items" in node:
            out["items"] = walk(node["items"])
        return out

    return walk(schema if schema is not None else openapi_schema())
