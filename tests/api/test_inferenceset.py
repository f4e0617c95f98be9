"""The InferenceSet API: upstream's examples, admission rules, the Workspace each replica is, the CRD."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pykaito.api.crd import strict_json_schema
from pykaito.api.inferenceset import LABEL_CREATED_BY, InferenceSet
from pykaito.api.loading import SchemaError, load_path, load_text
from pykaito.api.setcrd import REGENERATE, generate_set_crd, set_crd_yaml, set_openapi_schema
from pykaito.api.setrules import child_workspace, parse_set, sets_in, validate_set
from pykaito.api.validation import validate
from pykaito.planner.sizing import plan
from tests.api.conftest import ROOT

UPSTREAM = sorted((Path(__file__).parent / "data" / "upstream_inferencesets").glob("*.yaml"))
CHART_CRD = ROOT / "charts" / "pykaito" / "crds" / "inferenceset-crd.yaml"
BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "InferenceSet",
    "metadata": {"name": "phi"},
    "spec": {
        "replicas": 2,
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {
            "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    },
}


def nodes(workspace: Any) -> int:
    return plan(workspace).node_count


def with_changes(**spec: Any) -> InferenceSet:
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    return parse_set(body)


def errors_of(s: InferenceSet, old: InferenceSet | None = None) -> dict[str, str]:
    return {e.path: e.message for e in validate_set(s, old, nodes_per_replica=nodes)}


@pytest.mark.parametrize("path", UPSTREAM, ids=[p.name for p in UPSTREAM])
def test_upstream_examples_load_and_validate_unchanged(path: Path) -> None:
    docs = load_path(path)
    (found,) = sets_in(docs)
    assert validate_set(found, nodes_per_replica=nodes) == []
    assert found.replicas >= 1 and found.spec.labelSelector.matchLabels
    child = child_workspace(found, 0)
    assert child.name == f"{found.name}-0"
    assert child.resource is not None and child.resource.labelSelector == found.spec.labelSelector
    assert (child.metadata.labels or {})[LABEL_CREATED_BY] == found.name
    assert validate(child) == []
    jsonschema.validate(
        yaml.safe_load(path.read_text().split("---")[-1]), strict_json_schema(set_openapi_schema())
    )


def test_replicas_default_to_one_and_zero_is_allowed() -> None:
    body = copy.deepcopy(BASE)
    del body["spec"]["replicas"]
    assert parse_set(body).replicas == 1
    assert with_changes(replicas=0).replicas == 0
    assert errors_of(with_changes(replicas=0)) == {}


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        pytest.param({"replicas": -1}, "spec.replicas", "0 or more", id="negative-replicas"),
        pytest.param({"labelSelector": {}}, "spec.labelSelector", "matchLabels", id="empty-selector"),
        pytest.param(
            {"nodeCountLimit": 1, "replicas": 3}, "spec.replicas", "at most 1", id="over-node-limit"
        ),
        pytest.param(
            {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}},
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "at least 1",
            id="max-unavailable-zero",
        ),
        pytest.param(
            {"updateStrategy": {"type": "Recreate"}},
            "spec.updateStrategy.type",
            "RollingUpdate",
            id="bad-strategy",
        ),
        pytest.param(
            {"autoUpgrade": {"maintenanceWindow": {"schedule": "every night"}}},
            "spec.autoUpgrade.maintenanceWindow.schedule",
            "cron",
            id="bad-cron",
        ),
        pytest.param(
            {"template": {"inference": {"preset": {"name": "phi-4-mini-instrukt"}}}},
            "spec.template.inference.preset.name",
            "phi-4-mini-instruct",
            id="template-validated-as-workspace",
        ),
        pytest.param(
            {
                "template": {
                    "resource": {"instanceType": "Standard_XYZ"},
                    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
                }
            },
            "spec.template.resource.instanceType",
            "unknown instance type",
            id="template-instance-type",
        ),
    ],
)
def test_admission_rules_name_the_field_and_the_fix(change: dict[str, Any], path: str, words: str) -> None:
    found = errors_of(with_changes(**change))
    assert path in found, found
    assert words in found[path]


def test_node_count_limit_counts_replicas_times_nodes_per_replica() -> None:
    assert errors_of(with_changes(nodeCountLimit=2, replicas=2)) == {}
    message = errors_of(with_changes(nodeCountLimit=2, replicas=3))["spec.replicas"]
    assert message.startswith("3 replicas x 1 node(s) each = 3 nodes, over spec.nodeCountLimit 2")


def test_partition_is_immutable_as_upstream_and_the_template_may_change() -> None:
    old = with_changes(
        template={
            "resource": {"partition": {"mode": "mig", "profile": "2g.24gb"}},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
    )
    new = with_changes(
        template={
            "resource": {"partition": {"mode": "mig", "profile": "3g.47gb"}},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
    )
    assert "cannot change" in errors_of(new, old)["spec.template.resource.partition"]
    changed = with_changes(
        template={
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
    )
    assert errors_of(changed, with_changes()) == {}


@pytest.mark.parametrize(
    ("annotations", "key", "words"),
    [
        pytest.param(
            {"scaledobject.kaito.sh/auto-provision": "yes"}, "auto-provision", '"true" or "false"', id="flag"
        ),
        pytest.param(
            {"scaledobject.kaito.sh/auto-provision": "true", "scaledobject.kaito.sh/threshold": "ten"},
            "threshold",
            "a number",
            id="threshold",
        ),
        pytest.param(
            {
                "scaledobject.kaito.sh/auto-provision": "true",
                "scaledobject.kaito.sh/min-replicas": "4",
                "scaledobject.kaito.sh/max-replicas": "2",
            },
            "min-replicas",
            "above max-replicas",
            id="min-above-max",
        ),
    ],
)
def test_autoscaling_annotations_are_checked(annotations: dict[str, str], key: str, words: str) -> None:
    body = copy.deepcopy(BASE)
    body["metadata"]["annotations"] = annotations
    found = errors_of(parse_set(body))
    path = f'metadata.annotations["scaledobject.kaito.sh/{key}"]'
    assert words in found[path]


def test_a_wrong_shape_is_a_schema_error_with_the_path() -> None:
    text = yaml.safe_dump({**BASE, "spec": {**BASE["spec"], "replica": 2}})
    with pytest.raises(SchemaError) as caught:
        sets_in(load_text(text, "set.yaml"))
    assert "spec.replica: unknown field 'replica'" in str(caught.value)
    missing = copy.deepcopy(BASE)
    del missing["spec"]["labelSelector"]
    with pytest.raises(SchemaError, match=r"spec\.labelSelector: required field is missing"):
        parse_set(missing)


def test_crd_serves_both_versions_with_scale_and_printer_columns() -> None:
    crd = generate_set_crd()
    assert crd["metadata"]["name"] == "inferencesets.kaito.sh"
    assert crd["spec"]["names"]["shortNames"] == ["is", "isets"]
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1beta1", "v1alpha1"}
    assert versions["v1beta1"]["storage"] and not versions["v1alpha1"]["storage"]
    for version in versions.values():
        assert version["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        assert [c["name"] for c in version["additionalPrinterColumns"]] == [
            "Replicas",
            "ReadyReplicas",
            "Age",
        ]
    spec = versions["v1beta1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["default"] == 1 and spec["properties"]["replicas"]["minimum"] == 0
    assert "labelSelector" in spec["required"] and "template" in spec["required"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**BASE, "spec": {**BASE["spec"], "replicas": -1}}, strict_json_schema(set_openapi_schema())
        )


def test_committed_crd_matches_generator() -> None:
    assert CHART_CRD.read_text() == set_crd_yaml(), (
        f"the chart's InferenceSet CRD is stale; run `{REGENERATE}`"
    )


def test_kaito_validate_and_crd_handle_inferencesets(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pykaito.cli.main import app

    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "-f", str(UPSTREAM[0])])
    assert ok.exit_code == 0 and "inferenceset/llama-3-1-8b valid" in ok.stdout
    bad = tmp_path / "set.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "spec": {**BASE["spec"], "replicas": 9, "nodeCountLimit": 5}}))
    result = runner.invoke(app, ["validate", "-f", str(bad)])
    assert result.exit_code == 2
    assert "inferenceset/phi: spec.replicas: 9 replicas x 1 node(s) each = 9 nodes" in result.stderr
    assert "1 of 1 InferenceSet in" in result.stderr
    crd = runner.invoke(app, ["crd", "--kind", "InferenceSet"])
    assert crd.exit_code == 0 and crd.stdout == set_crd_yaml()
