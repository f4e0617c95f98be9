"""``kaito validate`` and ``kaito crd`` driven through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pykaito.api.crd import crd_yaml
from pykaito.cli import api_cmds
from tests.api.conftest import EXAMPLES, example_params

SEED = (EXAMPLES / "workspace-phi-4-mini-h100.yaml").read_text()
KAITO = Path(sys.executable).with_name("kaito")


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    api_cmds.register(app)
    return app


def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), args, input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("path", example_params())
def test_examples_validate(path: Path) -> None:
    code, out, err = run(["validate", "-f", str(path)])
    assert code == 0, err
    names = [
        d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Workspace"
    ]
    assert out.splitlines() == [f"workspace/{n} valid" for n in names]


def test_validate_reads_stdin() -> None:
    code, out, _ = run(["validate", "-f", "-"], stdin=SEED)
    assert (code, out) == (0, "workspace/workspace-phi-4-mini-h100 valid\n")


BAD = [
    pytest.param(
        "inference:\n  preset:\n    name: phi-4-mini-instruct\n  adapters: [\n",
        ["<stdin>:", "malformed YAML"],
        id="malformed-yaml",
    ),
    pytest.param(
        SEED.replace("name: phi-4-mini-instruct", "name: phi-4-mini"),
        ["inference.preset.name: unknown preset 'phi-4-mini' (did you mean 'phi-4-mini-instruct'"],
        id="unknown-preset",
    ),
    pytest.param(
        SEED.replace('"Standard_NC40ads_H100_v5"', "g5.xlarg"),
        ["resource.instanceType: unknown instance type 'g5.xlarg' (did you mean 'g5.xlarge'"],
        id="unknown-instance-type",
    ),
    pytest.param(
        SEED.replace("phi-4-mini-instruct", "deepseek-r1-0528").replace(
            "Standard_NC40ads_H100_v5", "Standard_NV36ads_A10_v5"
        ),
        [
            "resource.instanceType: deepseek-r1-0528 needs 641.3 GiB",
            "kaito.sh/bypass-resource-checks",
        ],
        id="model-too-large",
    ),
    pytest.param(
        SEED + "  adapters:\n" + "".join(f"  - source: {{name: a{i}, image: img}}\n" for i in range(11)),
        ["inference.adapters: 11 adapters; at most 10"],
        id="eleven-adapters",
    ),
    pytest.param(
        SEED.replace("resource:\n", "resource:\n  count: two\n"),
        ["resource.count: expected an integer, got string 'two'", "<stdin>:6"],
        id="wrong-type",
    ),
    pytest.param(
        SEED.replace("phi-4-mini-instruct", "llama-3.1-8b-instruct")
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hf}\nstringData: {token: x}\n",
        ["modelAccessSecret: meta-llama/Llama-3.1-8B-Instruct is gated"],
        id="token-required",
    ),
    pytest.param(
        SEED + "  config: cfg\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
        "data:\n  inference_config.yaml: |\n    vllm:\n      max-model-len: 200000\n",
        ["inference.config: ConfigMap 'cfg': vllm.max-model-len 200000 exceeds"],
        id="configmap-in-file",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", ["no Workspace found"], id="no-workspace"
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_validate_reports_errors_with_exit_2(text: str, expected: list[str]) -> None:
    code, out, err = run(["validate", "-f", "-"], stdin=text)
    assert code == 2
    assert "valid\n" not in out
    for words in expected:
        assert words in err
    assert "Traceback" not in out + err


def test_validate_notes_configmap_not_in_file() -> None:
    code, out, err = run(["validate", "-f", "-"], stdin=SEED + "  config: elsewhere\n")
    assert code == 0
    assert "ConfigMap 'elsewhere' is not in <stdin>" in err
    assert out == "workspace/workspace-phi-4-mini-h100 valid\n"


def test_validate_valid_and_invalid_in_one_file() -> None:
    second = SEED.replace("workspace-phi-4-mini-h100", "second").replace('"Standard_NC40ads_H100_v5"', "nope")
    code, out, err = run(["validate", "-f", "-"], stdin=SEED + "---\n" + second)
    assert code == 2
    assert out == "workspace/workspace-phi-4-mini-h100 valid\n"
    assert "workspace/second: resource.instanceType: unknown instance type 'nope'" in err
    assert "1 of 2 Workspaces" in err


def test_missing_file(tmp_path: Path) -> None:
    code, _, err = run(["validate", "-f", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "no such file" in err


def test_crd_command_prints_the_crd() -> None:
    code, out, _ = run(["crd"])
    assert code == 0
    assert out == crd_yaml()


@pytest.mark.parametrize(
    ("text", "code", "stdout", "stderr"),
    [
        pytest.param(
            SEED + "---\n" + SEED.replace("h100\n", "b\n", 1).replace("phi-4-mini-instruct", "phi-4-mini"),
            2,
            "workspace/workspace-phi-4-mini-h100 valid\n",
            "workspace/workspace-phi-4-mini-b: inference.preset.name: unknown preset 'phi-4-mini'",
            id="valid-and-typo",
        ),
        pytest.param("a: [\n", 2, "", "<stdin>:2:1: malformed YAML", id="malformed"),
    ],
)
def test_console_script(text: str, code: int, stdout: str, stderr: str) -> None:
    assert KAITO.exists(), f"{KAITO} missing: install the package (pip install -e . --no-deps)"
    proc = subprocess.run(
        [str(KAITO), "validate", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == stdout
    assert stderr in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def _named(name: str, text: str = SEED) -> str:
    return text.replace("workspace-phi-4-mini-h100", name)


def test_validate_checks_every_document_after_a_schema_error() -> None:
    bad_field = _named("first").replace("resource:\n", "resource:\n  colour: blue\n")
    bad_type = _named("second").replace("resource:\n", "resource:\n  count: two\n")
    not_a_ws = "apiVersion: kaito.sh/v1beta1\nmetadata: {name: x}\n"
    text = "---\n".join(
        [
            bad_field,
            _named("good"),
            bad_type,
            not_a_ws,
            _named("typo", SEED.replace("phi-4-mini-instruct", "phi-4-mini")),
        ]
    )
    code, out, err = run(["validate", "-f", "-"], stdin=text)
    assert code == 2
    assert out == "workspace/good valid\n"
    first_line = 1 + bad_field.splitlines().index("  colour: blue")
    count_line = 1 + text.splitlines().index("  count: two")
    assert "<stdin> (document 1): resource.colour: unknown field 'colour'" in err
    assert f"(<stdin>:{first_line})" in err
    assert "<stdin> (document 3): resource.count: expected an integer, got string 'two'" in err
    assert f"(<stdin>:{count_line})" in err
    assert "<stdin> (document 4): kind:" in err and "has no `kind`" in err
    assert "workspace/typo: inference.preset.name: unknown preset 'phi-4-mini'" in err
    assert "4 of 5 documents in <stdin> invalid" in err
    assert "Traceback" not in out + err


def test_validate_json_lists_invalid_documents_and_valid_ones() -> None:
    bad = _named("bad").replace("resource:\n", "resource:\n  count: two\n")
    code, out, _ = run(["validate", "-f", "-", "-o", "json"], stdin=bad + "---\n" + _named("good"))
    assert code == 2
    report = json.loads(out)
    assert report["valid"] is False
    assert [(w["name"], w["valid"]) for w in report["workspaces"]] == [("good", True)]
    (doc,) = report["invalid_documents"]
    assert doc["source"] == "<stdin> (document 1)"
    (error,) = doc["errors"]
    assert error["path"] == "resource.count"
    line = 1 + bad.splitlines().index("  count: two")
    assert f"(<stdin>:{line})" in error["message"]


def test_validate_json_all_valid_exits_0() -> None:
    code, out, _ = run(["validate", "-f", "-", "-o", "json"], stdin=SEED)
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True and "invalid_documents" not in report


SET = """apiVersion: kaito.sh/v1alpha1
kind: InferenceSet
metadata: {name: NAME}
spec:
  replicas: 1
  labelSelector: {matchLabels: {apps: x}}
  template:
    resource: {instanceType: Standard_NC40ads_H100_v5}
    inference:
      preset: {name: phi-4-mini-instruct}
"""


def test_validate_checks_inferencesets_after_a_broken_one(tmp_path: Path) -> None:
    broken = SET.replace("NAME", "broken").replace("  replicas: 1\n", "  replicas: 1\n  replica: 2\n")
    path = tmp_path / "sets.yaml"
    path.write_text(broken + "---\n" + SET.replace("NAME", "fine") + "---\n" + _named("ws"))
    code, out, err = run(["validate", "-f", str(path)])
    assert code == 2, err
    assert out.splitlines() == ["workspace/ws valid", "inferenceset/fine valid"]
    assert f"{path} (InferenceSet 1): spec.replica: unknown field 'replica'" in err
    assert f"({path}:6)" in err
    assert f"1 of 3 documents in {path} invalid" in err
