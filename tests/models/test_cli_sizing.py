"""`kaito plan NAME --cpu` and what `kaito up --model NAME` starts: sizing from free memory, explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pykaito.cli import models_cmds
from pykaito.errors import CatalogError, InputError
from tests.models.conftest import PRESET, Kaito
from tests.models.hubstub import Hub

GIB = 1024**3


@pytest.fixture
def free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has 6 GiB free, whatever it really has."""
    monkeypatch.setattr(models_cmds, "available_memory", lambda: 6 * GIB)


def test_plan_cpu_of_a_preset_not_pulled(kaito: Kaito, free_memory: None) -> None:
    result = kaito("plan", "phi-4-mini-instruct", "--cpu")
    assert result.code == 0, result.err
    assert "phi-4-mini-instruct Q4_K_M on this machine's CPU (llama.cpp); not pulled yet" in result.out
    assert "free memory 6.00 GiB: weights 2.32 GiB, reserve 1.10 GiB" in result.out
    assert "5 parallel slots x 4096 tokens fill the KV budget." in result.out
    assert "kaito serve phi-4-mini-instruct runs it with --parallel 5 --ctx-size 20480" in result.out


def test_plan_cpu_json_of_a_pulled_model(kaito: Kaito, hub: Hub, free_memory: None) -> None:
    assert kaito("pull", PRESET).code == 0
    plan = json.loads(kaito("plan", PRESET, "--cpu", "-o", "json").out)
    assert plan["model"] == PRESET and plan["weights_bytes"] == 98362432
    assert (plan["parallel"], plan["context_per_slot"], plan["ctx_size"]) == (8, 4096, 32768)
    assert plan["kv_bytes"] == 32768 * 23040


def test_plan_cpu_of_a_preset_without_gguf(kaito: Kaito) -> None:
    result = kaito("plan", "phi-4", "--cpu")
    assert result.code == 2 and "phi-4 has no GGUF for the CPU engine" in result.err


def test_up_model_resolves_a_pulled_model_and_sizes_it(hub: Hub, free_memory: None, kaito: Kaito) -> None:
    assert kaito("pull", PRESET).code == 0
    path, name, parallel, ctx_size = models_cmds.runtime_args(PRESET, pull_first=False)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and name == PRESET
    assert (parallel, ctx_size) == (8, 32768)


def test_up_model_file_and_missing_names(tmp_path: Path, gguf: Path) -> None:
    assert models_cmds.runtime_args(str(gguf), pull_first=False) == (gguf, "", 8, 0)
    assert models_cmds.runtime_args(None, pull_first=False) == (None, "", 8, 0)
    with pytest.raises(InputError, match="no such file"):
        models_cmds.runtime_args(str(tmp_path / "nope.gguf"), pull_first=False)
    with pytest.raises(CatalogError, match="run `kaito pull acme/x-GGUF` first"):
        models_cmds.runtime_args("acme/x-GGUF", pull_first=False)
    with pytest.raises(InputError, match="--pull needs --model NAME"):
        models_cmds.runtime_args(None, pull_first=True)
