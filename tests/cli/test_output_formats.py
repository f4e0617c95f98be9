"""``-o json|yaml`` on the commands that print a result, driven through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pykaito.api.crd import generate_crd
from tests.cli.conftest import Kaito

ROOT = Path(__file__).parents[2]
SEED = ROOT / "examples" / "workspace-phi-4-mini-h100.yaml"
GEMMA = ROOT / "examples" / "upstream" / "gemma-3-4b-instruct.yaml"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_validate_prints_one_result_per_workspace(kaito: Kaito, fmt: str) -> None:
    result = kaito("validate", "-f", str(GEMMA), "-o", fmt)
    assert result.code == 0, result.err
    data = json.loads(result.out) if fmt == "json" else yaml.safe_load(result.out)
    assert data["valid"] is True
    [ws] = data["workspaces"]
    assert ws == {
        "name": "workspace-gemma-3-4b-instruct",
        "namespace": "default",
        "valid": True,
        "errors": [],
        "notes": [],
    }


def test_validate_json_lists_every_error_with_its_path_and_exits_2(kaito: Kaito, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = SEED.read_text().replace("phi-4-mini-instruct", "phi-5-giant")
    bad.write_text(
        text.replace("metadata:\n", "metadata:\n  annotations: {kaito.sh/performance-mode: fast}\n", 1)
    )
    result = kaito("validate", "-f", str(bad), "-o", "json")
    assert result.code == 2
    data = json.loads(result.out)
    assert data["valid"] is False
    errors = {e["path"]: e["message"] for e in data["workspaces"][0]["errors"]}
    mode = 'metadata.annotations["kaito.sh/performance-mode"]'
    assert set(errors) == {"inference.preset.name", mode}
    assert "'fast' is not valid" in errors[mode] and "balanced" in errors[mode]


def test_validate_json_reports_schema_errors_too(kaito: Kaito, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("instanceType:", "instanceTyp:"))
    result = kaito("validate", "-f", str(bad), "-o", "json")
    assert result.code == 2
    data = json.loads(result.out)
    assert data["valid"] is False and data["workspaces"] == []
    (document,) = data["invalid_documents"]
    assert document["source"] == str(bad)
    assert document["errors"][0]["path"].startswith("resource.instanceTyp")


def test_crd_render_and_version_as_json(kaito: Kaito) -> None:
    result = kaito("crd", "-o", "json")
    assert result.code == 0 and json.loads(result.out) == generate_crd()
    result = kaito("render", "-f", str(GEMMA), "-o", "json")
    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert listed["kind"] == "List"
    assert [o["kind"] for o in listed["items"]] == ["Service", "Service", "StatefulSet"]
    version = json.loads(kaito("version", "-o", "json").out)
    assert version["workspaceAPI"] == "kaito.sh/v1beta1" and version["pykaito"]
