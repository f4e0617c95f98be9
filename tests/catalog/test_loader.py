"""The catalog data files against the reference tables, and lookups with suggestions."""

from __future__ import annotations

import re

import pytest

from pykaito.catalog.loader import _build, closest, did_you_mean, load_catalog
from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.errors import CatalogError

CATALOG = load_catalog()

# preset: (Hugging Face id, size GiB, context, KV bytes per token, tool parser, reasoning parser)
REFERENCE = {
    "phi-4-mini-instruct": ("microsoft/Phi-4-mini-instruct", 7.15, 131072, 131072, "phi4_mini_json", None),
    "phi-4": ("microsoft/phi-4", 27.31, 16384, 204800, None, None),
    "phi-3-mini-4k-instruct": ("microsoft/Phi-3-mini-4k-instruct", 7.12, 4096, 393216, None, None),
    "phi-3-mini-128k-instruct": ("microsoft/Phi-3-mini-128k-instruct", 7.12, 131072, 393216, None, None),
    "phi-3.5-mini-instruct": ("microsoft/Phi-3.5-mini-instruct", 7.12, 131072, 393216, None, None),
    "phi-3-medium-4k-instruct": ("microsoft/Phi-3-medium-4k-instruct", 26, 4096, 204800, None, None),
    "phi-3-medium-128k-instruct": ("microsoft/Phi-3-medium-128k-instruct", 26, 131072, 204800, None, None),
    "llama-3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", 14.96, 131072, 131072, "llama3_json", None),
    "llama-3.3-70b-instruct": (
        "meta-llama/Llama-3.3-70B-Instruct", 131.42, 131072, 327680, "llama3_json", None
    ),
    "deepseek-r1-distill-llama-8b": (
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 14.96, 131072, 131072, "deepseek_v3", "deepseek_r1"
    ),
    "deepseek-r1-distill-qwen-14b": (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 27.51, 131072, 196608, "deepseek_v3", "deepseek_r1"
    ),
    "qwen2.5-coder-7b-instruct": ("Qwen/Qwen2.5-Coder-7B-Instruct", 14.19, 32768, 57344, "hermes", None),
    "qwen2.5-coder-32b-instruct": ("Qwen/Qwen2.5-Coder-32B-Instruct", 61.03, 32768, 262144, "hermes", None),
    "gpt-oss-20b": ("openai/gpt-oss-20b", 25.63, 131072, 49152, "openai", "openai_gptoss"),
    "gpt-oss-120b": ("openai/gpt-oss-120b", 121.54, 131072, 73728, "openai", "openai_gptoss"),
    "gemma-3-4b-instruct": ("google/gemma-3-4b-it", 8.01, 131072, 139264, "functiongemma", None),
    "gemma-3-27b-instruct": ("google/gemma-3-27b-it", 51.10, 131072, 507904, "functiongemma", None),
    "mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.3", 13.50, 32768, 131072, "mistral", None),
    "deepseek-r1-0528": ("deepseek-ai/DeepSeek-R1-0528", 641.30, 163840, 70272, "deepseek_v3", "deepseek_r1"),
    "deepseek-v3-0324": ("deepseek-ai/DeepSeek-V3-0324", 641.30, 163840, 70272, "deepseek_v3", "deepseek_v3"),
    "mistral-7b": ("mistralai/Mistral-7B-v0.3", 13.50, 32768, 131072, "mistral", None),
    "ministral-3-3b-instruct": ("mistralai/Ministral-3-3B-Instruct-2512", 4.35, 262144, 106496, None, None),
    "ministral-3-8b-instruct": ("mistralai/Ministral-3-8B-Instruct-2512", 9.70, 262144, 139264, None, None),
    "ministral-3-14b-instruct": (
        "mistralai/Ministral-3-14B-Instruct-2512", 14.65, 262144, 163840, None, None
    ),
    "mistral-large-3-675b-instruct": (
        "mistralai/Mistral-Large-3-675B-Instruct-2512", 634.70, 294912, 70272, "mistral", None
    ),
}  # fmt: skip
TOKEN_NEEDED = {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_presets_match_the_reference_table(name: str) -> None:
    preset = CATALOG.presets[name]
    model_id, size, context, kv, tool_parser, _reasoning = REFERENCE[name]
    assert (preset.model_id, preset.size_gib, preset.context_length) == (model_id, size, context)
    assert preset.kv_bytes_per_token == kv
    assert preset.tool_call_parser == tool_parser
    assert preset.download_token_required == (name in TOKEN_NEEDED)
    assert "vllm" in preset.runtimes
    assert preset.reasoning_parser == _reasoning


@pytest.mark.parametrize("name", sorted(p for p in CATALOG.presets if CATALOG.presets[p].kv_heads))
def test_kv_bytes_per_token_follows_from_the_shapes(name: str) -> None:
    p = CATALOG.presets[name]
    assert p.layers and p.kv_heads and p.head_dim and p.attention_heads
    assert p.kv_bytes_per_token == 2 * p.kv_heads * p.head_dim * p.layers * 2
    assert p.attention_heads % p.kv_heads == 0


def test_cpu_preset_is_embedded_llamacpp() -> None:
    smol = CATALOG.presets["smollm2-135m-instruct"]
    assert smol.cpu_only and smol.default_runtime == "llamacpp" and smol.gguf == "embedded"


def test_instance_types_utilization_and_shapes() -> None:
    for t in CATALOG.instance_types.values():
        if not t.has_gpu:
            assert t.gpu_memory_utilization == 0.0
            continue
        expected = 0.82 if t.gpu_model == "A10" else 0.84
        assert t.gpu_memory_utilization == expected, t.name
        assert t.memory_bandwidth_gbs > 0
        assert t.per_gpu_memory_gib in {24, 40, 80, 94, 141}, t.name


def test_lookup_by_name_or_hugging_face_id() -> None:
    assert CATALOG.preset("microsoft/phi-4-mini-instruct").name == "phi-4-mini-instruct"
    assert CATALOG.find_preset("nope") is None


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(CatalogError) as caught:
        CATALOG.preset("llama-3.3-70b")
    assert caught.value.suggestions[0] == "llama-3.3-70b-instruct"
    assert "did you mean 'llama-3.3-70b-instruct'" in str(caught.value)
    with pytest.raises(CatalogError) as caught:
        CATALOG.instance_type("standard_nc24ads_a100_v4")
    assert caught.value.suggestions[0] == "Standard_NC24ads_A100_v4"
    assert closest("zzzzzz", CATALOG.presets) == ()
    assert did_you_mean(()) == ""


def test_unknown_keys_in_a_data_file_are_refused() -> None:
    with pytest.raises(CatalogError, match=r"unknown keys \['gpus'\]"):
        _build(InstanceType, {"name": "x", "gpus": 1}, "instance_types.yaml")


def test_every_gpu_preset_is_pinned_to_a_hugging_face_commit() -> None:
    gpu = [p for p in CATALOG.presets.values() if not p.cpu_only]
    assert len(gpu) >= 25
    for preset in gpu:
        assert re.fullmatch(r"[0-9a-f]{40}", preset.revision), f"{preset.name} has no pinned revision"
    assert CATALOG.presets["llama-3.3-70b-instruct"].revision == "6f6073b423013f6a7d4d9f39144961bfbfbc386b"
    assert CATALOG.presets["smollm2-135m-instruct"].revision == ""  # the embedded GGUF: nothing to fetch


def test_a_revision_that_is_not_a_commit_is_refused() -> None:
    raw = {"name": "x", "model_id": "o/x", "size_gib": 1, "context_length": 1, "kv_bytes_per_token": 1}
    with pytest.raises(CatalogError, match=r"x.revision 'main' is not a Hugging Face commit"):
        _build(ModelPreset, {**raw, "revision": "main"}, "presets.yaml")
    assert _build(ModelPreset, {**raw, "revision": "a" * 40}, "presets.yaml").revision == "a" * 40
