"""The Hugging Face edge: failures become CatalogError with what to do, never a hub exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pykaito.catalog.models import describe_model
from pykaito.client.hub import fetch_model_files
from pykaito.errors import CatalogError


def test_hub_offline_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CatalogError, match=r"cannot be reached .* not in the local cache") as caught:
        fetch_model_files("example-org/example-model", cache_dir=tmp_path / "hub-cache")
    assert caught.value.__cause__ is not None  # raised from the hub's own exception


def test_cached_files_describe_a_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.json and the weight index already in the cache: described without the network."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--example-org--example-model" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "torch_dtype": "bfloat16"}
    (snapshot / "config.json").write_text(json.dumps(config))
    index = {"metadata": {"total_size": 2_000_000}, "weight_map": {}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def hub(model_id: str) -> tuple[dict[str, object], int]:
        return fetch_model_files(model_id, cache_dir=tmp_path / "hub")

    preset = describe_model("example-org/example-model", hub=hub)
    assert (preset.layers, preset.hidden_size, preset.source) == (2, 64, "huggingface")
    assert preset.size_gib == round(2_000_000 / 2**30, 3)
