"""`kaito validate` checks what `kaito plan` checks, with messages that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Kaito

HEADER = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n"


def workspace(tmp_path: Path, body: str, name: str = "demo") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEADER.format(name=name) + body)
    return str(path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "resource:\n  instanceType: Standard_NC6s_v3\ninference:\n  preset:\n    name: phi-4\n",
            "resource.instanceType: unknown instance type 'Standard_NC6s_v3'",
            id="unknown-instance-type-as-plan-finds-it",
        ),
        pytest.param(
            "spec:\n  resource:\n    instanceType: Standard_NC24ads_A100_v4\n",
            "spec: kaito.sh/v1beta1 Workspaces have no `spec`: move `resource` and `inference`",
            id="spec-wrapper",
        ),
    ],
)
def test_validate_refuses_what_plan_refuses(kaito: Kaito, tmp_path: Path, body: str, expected: str) -> None:
    path = workspace(tmp_path, body)
    result = kaito("validate", "-f", path)
    assert result.code == 2
    assert expected in result.err
    assert "Traceback" not in result.err
    assert "(s)" not in result.err  # "1 error", "1 of 1 Workspace"


def test_validate_and_plan_agree_on_the_examples(kaito: Kaito) -> None:
    for path in sorted(Path(__file__).parents[2].glob("examples/*.yaml")):
        validated = kaito("validate", "-f", str(path))
        assert validated.code == 0, (path, validated.err)


def test_every_workspace_in_a_file_is_reported(kaito: Kaito, tmp_path: Path) -> None:
    good = HEADER.format(name="good") + (
        "resource:\n  instanceType: Standard_NC24ads_A100_v4\ninference:\n  preset:\n"
        "    name: phi-4-mini-instruct\n"
    )
    bad = HEADER.format(name="bad") + (
        "resource:\n  instanceType: Standard_NC6s_v3\ninference:\n  preset:\n    name: phi-4\n"
    )
    worse = HEADER.format(name="worse") + (
        "resource:\n  instanceType: Standard_NOPE\ninference:\n  preset:\n    name: phi-4\n"
    )
    path = tmp_path / "three.yaml"
    path.write_text("---\n".join([good, bad, worse]))
    result = kaito("validate", "-f", str(path))
    assert result.code == 2
    assert "workspace/good valid" in result.out
    assert "workspace/bad:" in result.err and "workspace/worse:" in result.err
    assert "2 of 3 Workspaces" in result.err
