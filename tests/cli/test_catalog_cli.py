"""``kaito presets``, ``kaito instance-types`` and ``kaito version`` transcripts."""

from __future__ import annotations

import json

import pytest
import yaml

from pykaito.cli import output
from tests.cli.conftest import Kaito


def test_presets_json(kaito: Kaito) -> None:
    result = kaito("presets", "-o", "json")
    assert result.code == 0
    data = json.loads(result.out)
    by_name = {p["name"]: p for p in data}
    assert len(by_name) == 26
    assert by_name["phi-4-mini-instruct"]["model_id"] == "microsoft/Phi-4-mini-instruct"
    assert by_name["llama-3.3-70b-instruct"]["download_token_required"] is True
    assert by_name["smollm2-135m-instruct"]["runtimes"] == ["llamacpp"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["llama"],
            {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "deepseek-r1-distill-llama-8b"},
            id="filter",
        ),
        pytest.param(["--runtime", "llamacpp"], {"smollm2-135m-instruct"}, id="runtime"),
        pytest.param(
            ["phi", "--max-size", "7.13"],
            {"phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3.5-mini-instruct"},
            id="max-size",
        ),
        pytest.param(["no-such-model"], set(), id="nothing"),
    ],
)
def test_presets_filters(kaito: Kaito, args: list[str], expected: set[str]) -> None:
    result = kaito("presets", *args, "-o", "yaml")
    assert result.code == 0
    assert {p["name"] for p in yaml.safe_load(result.out) or []} == expected


def test_presets_table(kaito: Kaito) -> None:
    result = kaito("presets", "gpt-oss", "-o", "wide")
    assert result.code == 0
    assert "2 model presets" in result.out
    for text in ("gpt-oss-20b", "openai/gpt-oss-120b", "121.54", "tools: openai, reasoning: openai_gptoss"):
        assert text in result.out


def test_instance_types_json_filters(kaito: Kaito) -> None:
    result = kaito("instance-types", "--cloud", "aws", "--gpu", "a100", "-o", "json")
    assert result.code == 0
    assert [t["name"] for t in json.loads(result.out)] == ["p4d.24xlarge", "p4de.24xlarge"]


def test_instance_types_table(kaito: Kaito) -> None:
    result = kaito("instance-types", "--cloud", "azure")
    assert result.code == 0
    assert "Standard_NC40ads_H100_v5" in result.out
    assert "H100-NVL" in result.out
    assert "p5.48xlarge" not in result.out
    assert "CPU only" in result.out  # Standard_D4s_v5


def test_instance_types_unknown_cloud_is_a_usage_error(kaito: Kaito) -> None:
    result = kaito("instance-types", "--cloud", "oracle")
    assert result.code == 2
    assert "oracle" in result.err


def test_version(kaito: Kaito) -> None:
    result = kaito("version")
    assert result.code == 0
    assert result.out.strip() == "pykaito 0.1.0 (Workspace API kaito.sh/v1beta1)"


@pytest.mark.parametrize("command", ["presets", "instance-types"])
def test_tables_fit_80_columns_and_explain_their_columns(
    kaito: Kaito, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr(output.console, "width", 80)
    result = kaito(command)
    assert result.code == 0
    lines = result.out.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = [item["name"] for item in json.loads(kaito(command, "-o", "json").out)]
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("──"))
    body = [line for line in lines[rule + 1 :] if line.strip()][: len(names)]
    # one line per row, each starting with its whole name: nothing folded onto a second line
    assert [line.split()[0] for line in body] == names
    assert "-o wide" in result.out
    assert "GiB" in result.out and ("GiB: size" in result.out or "GiB/GPU: memory" in result.out)
