"""``kaito plan`` transcripts: a preset on an instance type, a Workspace file, and the failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Kaito

KAITO = Path(sys.executable).with_name("kaito")

SEED = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-phi-4-mini
resource:
  instanceType: Standard_NC40ads_H100_v5
  labelSelector:
    matchLabels:
      apps: phi-4-mini
inference:
  preset:
    name: phi-4-mini-instruct
"""

CONFIG_MAP = """\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: phi-config
data:
  inference_config.yaml: |
    vllm:
      max-model-len: 16384
      enable-prefix-caching: true
"""


def test_plan_seed_json(kaito: Kaito) -> None:
    result = kaito("plan", "phi-4-mini-instruct", "--instance-type", "Standard_NC40ads_H100_v5", "-o", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["gpus_per_node"], data["node_count"], data["tensor_parallel"]) == (1, 1, 1)
    assert data["max_model_len"] == 131072
    assert data["memory"] == {
        "gpu_memory_gib": 94.0,
        "usable_gib": 78.96,
        "weights_gib": 7.293,
        "kv_cache_gib": 69.002,
        "overhead_gib": 2.665,
        "total_gib": 78.96,
    }
    assert data["upstream"] == {"min_gpus": 1, "node_count": 1, "max_model_len": 2048}
    assert data["argv"][:2] == ["--model", "microsoft/Phi-4-mini-instruct"]
    assert data["argv"][-2:] == ["--port", "5000"]
    others = [a["instance_type"] for a in data["alternatives"]]
    assert others[:2] == ["Standard_NV36ads_A10_v5", "Standard_NV72ads_A10_v5"]
    assert "Standard_NC40ads_H100_v5" not in others


def test_plan_table_explains(kaito: Kaito) -> None:
    result = kaito("plan", "llama-3.3-70b-instruct", "-i", "Standard_NC24ads_A100_v4")
    assert result.code == 0, result.err
    out = result.out
    assert "3 x Standard_NC24ads_A100_v4 (1 x A100-80GB-PCIe each, 3 GPUs)" in out
    assert "tensor 1, pipeline 3, data 1" in out
    assert "• 3 nodes: fewer cannot hold 131.42 GiB of weights" in out
    assert "memory per GPU (GiB)" in out
    assert "--pipeline-parallel-size 3 --distributed-executor-backend ray" in out
    assert "other instance types that fit (smallest first)" in out
    assert "Standard_NC80adis_H100_v5" in out


def test_plan_workspace_file_with_its_config_map(kaito: Kaito, tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    path.write_text(
        SEED.replace(
            "    name: phi-4-mini-instruct\n", "    name: phi-4-mini-instruct\n  config: phi-config\n"
        )
        + CONFIG_MAP
    )
    result = kaito("plan", "-f", str(path), "-o", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["workspace"] == "workspace-phi-4-mini"
    assert data["max_model_len"] == 16384
    assert data["argv"][-1] == "--enable-prefix-caching"


def test_plan_seed_file_yaml(kaito: Kaito, tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    path.write_text(SEED)
    result = kaito("plan", "-f", str(path), "-o", "yaml")
    assert result.code == 0, result.err
    assert "node_count: 1\n" in result.out
    assert "max_model_len: 131072\n" in result.out


def test_plan_count_refused(kaito: Kaito) -> None:
    result = kaito("plan", "llama-3.3-70b-instruct", "-i", "Standard_NC24ads_A100_v4", "--count", "1")
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "resource.count 1 is too few" in lines[0] and "needs 3 nodes" in lines[0]


def test_plan_cpu_preset_needs_no_instance_type(kaito: Kaito) -> None:
    result = kaito("plan", "smollm2-135m-instruct", "-o", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["runtime"], data["gpus_per_node"], data["node_count"]) == ("llamacpp", 0, 1)
    assert data["alternatives"] == []


def test_plan_local_model_directory(kaito: Kaito, tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    config = {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "max_position_embeddings": 8192,
    }
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 2 * 2**30}}))
    result = kaito("plan", str(model), "-i", "g6.xlarge", "-o", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["preset"] == "my-model"
    assert data["max_model_len"] == 8192


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["plan", "phi-4-mini", "-i", "Standard_NC40ads_H100_v5"],
            "unknown preset 'phi-4-mini' (did you mean 'phi-4-mini-instruct'",
            id="unknown-preset",
        ),
        pytest.param(
            ["plan", "phi-4-mini-instruct", "-i", "Standard_NC40ads_H100"],
            "unknown instance type 'Standard_NC40ads_H100' (did you mean 'Standard_NC40ads_H100_v5'",
            id="unknown-instance-type",
        ),
        pytest.param(["plan"], "give a PRESET or -f workspace.yaml", id="nothing-to-plan"),
        pytest.param(
            ["plan", "phi-4", "-i", "Standard_NC40ads_H100_v5", "--max-model-len", "65536"],
            "exceeds phi-4's context limit of 16384",
            id="context-limit",
        ),
        pytest.param(["plan", "phi-4-mini-instruct"], "needs a GPU", id="no-instance-type"),
    ],
)
def test_plan_failures_are_one_line_exit_2(kaito: Kaito, args: list[str], message: str) -> None:
    result = kaito(*args)
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


def test_console_script_unknown_preset_no_traceback() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [str(KAITO), "plan", "phi-4-mini", "--instance-type", "Standard_NC40ads_H100_v5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: unknown preset 'phi-4-mini' (did you mean 'phi-4-mini-instruct'")
    assert "Traceback" not in proc.stderr


LLAMA_70B = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: llama-70b
resource:
  instanceType: Standard_NC24ads_A100_v4
{count}inference:
  preset:
    name: llama-3.3-70b-instruct
    presetOptions:
      modelAccessSecret: hf-token
"""


def test_plan_file_picks_the_node_count_and_notes_a_count_too_small(kaito: Kaito, tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(LLAMA_70B.format(count=""))
    result = kaito("plan", "-f", str(chosen), "-o", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["node_count"] == 3
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(LLAMA_70B.format(count="  count: 2\n"))
    result = kaito("plan", "-f", str(fixed))
    # as upstream admits it: the planner's 3 nodes are used and a note says why
    assert result.code == 0, result.err
    assert "note: resource.count 2 is below what llama-3.3-70b-instruct needs" in " ".join(result.out.split())
    assert "3 nodes are used instead" in " ".join(result.out.split())
