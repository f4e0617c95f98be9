"""The CustomResourceDefinition generated from the types, and the chart's committed copy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pykaito.api.crd import REGENERATE, crd_yaml, generate_crd, openapi_schema, strict_json_schema
from pykaito.api.loading import load_path, to_dict
from tests.api.conftest import ROOT, example_params

CHART_CRD = ROOT / "charts" / "pykaito" / "crds" / "workspace-crd.yaml"
SEED = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-4-mini-h100"},
    "resource": {
        "instanceType": "Standard_NC40ads_H100_v5",
        "labelSelector": {"matchLabels": {"apps": "phi-4-h100"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}


def test_committed_crd_matches_generator() -> None:
    assert CHART_CRD.exists(), f"missing {CHART_CRD}; generate it with `{REGENERATE}`"
    assert CHART_CRD.read_text() == crd_yaml(), f"the chart's CRD is stale; regenerate it with `{REGENERATE}`"


def test_crd_yaml_is_deterministic_and_anchor_free() -> None:
    text = crd_yaml()
    assert text == crd_yaml()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == generate_crd()


def test_crd_identity() -> None:
    crd = generate_crd()
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "workspaces.kaito.sh"
    assert spec["group"] == "kaito.sh"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "workspaces"
    assert spec["names"]["kind"] == "Workspace"
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert versions["v1beta1"]["served"] and versions["v1beta1"]["storage"]
    assert versions["v1alpha1"]["served"] and not versions["v1alpha1"]["storage"]
    assert versions["v1alpha1"]["schema"] == versions["v1beta1"]["schema"]
    for version in versions.values():
        assert version["subresources"] == {"status": {}}


def test_printer_columns_as_upstream() -> None:
    columns = generate_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    columns = [c for c in columns if not c.get("priority")]  # kubectl get without -o wide
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Instance", "string", ".resource.instanceType"),
        ("ResourceReady", "string", '.status.conditions[?(@.type=="ResourceReady")].status'),
        ("InferenceReady", "string", '.status.conditions[?(@.type=="InferenceReady")].status'),
        ("WorkspaceSucceeded", "string", '.status.conditions[?(@.type=="WorkspaceSucceeded")].status'),
        ("TargetNodeCount", "integer", ".status.targetNodeCount"),
        ("State", "string", ".status.state"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_wide_printer_columns_show_the_benchmark() -> None:
    columns = generate_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = [(c["name"], c["jsonPath"]) for c in columns if c.get("priority") == 1]
    assert wide == [
        ("PeakTokensPerMin", ".status.performance.metrics.peakTokensPerMinute.value"),
        ("TTFT-ms", ".status.performance.metrics.timeToFirstToken.value"),
        ("TokensPerSecPerStream", ".status.performance.metrics.tokensPerSecondPerStream.value"),
        ("Benchmark", '.status.conditions[?(@.type=="BenchmarkCompleted")].status'),
    ]
    assert [c["name"] for c in columns][-1] == "Age"  # kubectl -o wide: the figures come before Age


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


def test_schema_is_structural() -> None:
    schema = openapi_schema()
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "type" in node, f"{path or '<root>'} has no type"
        assert "nullable" not in node and "title" not in node, path
        assert "default" not in node or path.endswith(".preset.accessMode"), path  # as upstream's CRD
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if node["type"] == "object" and "properties" not in node and "additionalProperties" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields") is True or path == ".metadata", path


def test_schema_free_form_and_metadata() -> None:
    props = openapi_schema()["properties"]
    assert props["metadata"] == {"type": "object"}
    template = props["inference"]["properties"]["template"]
    assert template == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    source = props["inference"]["properties"]["adapters"]["items"]["properties"]["source"]
    assert source["properties"]["volumeSource"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert props["resource"]["properties"]["count"]["type"] == "integer"
    assert props["status"]["properties"]["targetNodeCount"]["type"] == "integer"
    assert "conditions" in props["status"]["properties"]


def _validator() -> jsonschema.Draft202012Validator:
    schema = strict_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", example_params())
def test_schema_accepts_examples(path: Path) -> None:
    validator = _validator()
    for ws in load_path(path).workspaces:
        errors = [e.message for e in validator.iter_errors(to_dict(ws))]
        assert errors == []
        raw = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Workspace"]
        for doc in raw:
            assert list(validator.iter_errors(doc)) == []


def _mutate(change: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(SEED)
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("change", "where"),
    [
        pytest.param({"resource.count": "two"}, ["resource", "count"], id="count-string"),
        pytest.param(
            {"resource.labelSelector": ["apps=x"]}, ["resource", "labelSelector"], id="selector-list"
        ),
        pytest.param({"spec": {"resource": {}}}, [], id="unknown-top-level"),
        pytest.param({"resource.instanceTyp": "x"}, ["resource"], id="unknown-nested"),
        pytest.param(
            {"inference.preset.accessMode": "open"}, ["inference", "preset", "accessMode"], id="enum"
        ),
        pytest.param(
            {"inference.preset": {"accessMode": "public"}}, ["inference", "preset"], id="missing-name"
        ),
        pytest.param(
            {"resource.labelSelector.matchLabels": {"apps": 1}},
            ["resource", "labelSelector", "matchLabels", "apps"],
            id="label-int",
        ),
        pytest.param(
            {"inference.adapters": [{"source": {"name": "a"}, "strength": 0.5}]},
            ["inference", "adapters", 0, "strength"],
            id="strength-number",
        ),
    ],
)
def test_schema_rejects_wrong_types(change: dict[str, Any], where: list[Any]) -> None:
    errors = list(_validator().iter_errors(_mutate(change)))
    assert errors, "expected the schema to reject this"
    assert where in [list(e.absolute_path) for e in errors]


def test_schema_keeps_free_form_template() -> None:
    doc = _mutate({"inference": {"template": {"spec": {"containers": [{"name": "x", "image": "y"}]}}}})
    assert list(_validator().iter_errors(doc)) == []


def test_crd_is_a_valid_kubernetes_object() -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(generate_crd(), version, strict=True)  # raises when invalid
    broken = generate_crd()
    broken["spec"]["scope"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
