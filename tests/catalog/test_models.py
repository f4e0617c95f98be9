"""Describing models from config.json: local directories offline, and a clear error for the hub offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pykaito.catalog.models import describe_directory, describe_model, is_hf_id, shapes
from pykaito.errors import CatalogError
from pykaito.planner import plan_preset

LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
LLAMA_8B_BYTES = 16_060_522_496


def write_model(path: Path, config: dict[str, Any], index_total: int | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if index_total is not None:
        index = {
            "metadata": {"total_size": index_total},
            "weight_map": {"lm_head.weight": "model-1.safetensors"},
        }
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path


def test_local_directory_with_an_index(tmp_path: Path) -> None:
    directory = write_model(tmp_path / "Llama-8B", LLAMA_8B_CONFIG, LLAMA_8B_BYTES)
    preset = describe_model(str(directory))
    assert preset.source == "local"
    assert preset.name == "Llama-8B"
    assert preset.model_id == str(directory)
    assert (preset.layers, preset.attention_heads, preset.kv_heads) == (32, 32, 8)
    assert (preset.hidden_size, preset.head_dim) == (4096, 128)
    assert preset.context_length == 131072
    assert preset.kv_bytes_per_token == 131072  # as the reference table gives for Llama 3.1 8B
    assert preset.size_gib == pytest.approx(14.96, abs=0.01)
    assert preset.params_billion == pytest.approx(8.03, abs=0.01)
    assert preset.dtype == "bfloat16"


def test_local_directory_sums_the_safetensors_files(tmp_path: Path) -> None:
    directory = write_model(tmp_path / "tiny", {**LLAMA_8B_CONFIG, "num_hidden_layers": 2})
    (directory / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 3000)
    (directory / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 1000)
    preset = describe_directory(directory)
    assert preset.size_gib == pytest.approx(4000 / 2**30, abs=1e-3)
    assert preset.kv_bytes_per_token == 2 * 8 * 128 * 2 * 2


def test_multimodal_text_config_and_explicit_head_dim() -> None:
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {
            "hidden_size": 2560,
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "max_position_embeddings": 131072,
        },
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
        "torch_dtype": "bfloat16",
    }
    figures = shapes(config)
    assert figures["layers"] == 34
    assert figures["head_dim"] == 256
    assert figures["context_length"] == 131072
    assert figures["kv_bytes_per_token"] == 139264  # gemma-3-4b in the reference table


def test_multi_head_latent_attention() -> None:
    config = {
        "hidden_size": 7168,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "max_position_embeddings": 163840,
    }
    figures = shapes(config)
    assert figures["kv_bytes_per_token"] == 70272  # DeepSeek-V3 in the reference table
    assert figures["kv_heads"] is None


def test_described_model_can_be_planned(tmp_path: Path) -> None:
    preset = describe_model(write_model(tmp_path / "m", LLAMA_8B_CONFIG, LLAMA_8B_BYTES))
    result = plan_preset(preset, "Standard_NC24ads_A100_v4")
    assert (result.node_count, result.tensor_parallel) == (1, 1)
    assert ("--model", str(tmp_path / "m")) in result.engine_args


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({}, "no config.json", id="no-config"),
        pytest.param({"config.json": "{not json"}, "not valid JSON", id="bad-json"),
        pytest.param({"config.json": json.dumps({"foo": 1})}, "cannot read the model's shape", id="no-shape"),
        pytest.param({"config.json": json.dumps(LLAMA_8B_CONFIG)}, "no weights found", id="no-weights"),
        pytest.param(
            {"config.json": json.dumps(LLAMA_8B_CONFIG), "model.safetensors.index.json": "{}"},
            "no metadata.total_size",
            id="index-without-size",
        ),
    ],
)
def test_broken_directories_say_what_is_wrong(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CatalogError, match=message):
        describe_model(tmp_path)


def test_missing_directory_and_bad_references(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such model directory"):
        describe_model(str(tmp_path / "absent"))
    with pytest.raises(CatalogError, match="neither a local model directory nor a Hugging Face id"):
        describe_model("not a model")
    assert is_hf_id("microsoft/phi-4")
    assert not is_hf_id("phi-4")


def test_hub_ids_are_read_through_the_lookup_given() -> None:
    asked: list[str] = []

    def hub(model_id: str) -> tuple[dict[str, object], int]:
        asked.append(model_id)
        return dict(LLAMA_8B_CONFIG), LLAMA_8B_BYTES

    preset = describe_model("example-org/example-model", hub=hub)
    assert asked == ["example-org/example-model"]
    assert (preset.source, preset.model_id, preset.layers) == ("huggingface", "example-org/example-model", 32)
    with pytest.raises(CatalogError, match="no hub lookup was given"):
        describe_model("example-org/example-model")
