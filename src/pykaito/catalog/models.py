"""Describe any model from its ``config.json`` and weight files: a local directory or a Hugging Face id.

The same code reads both: a local directory directly; for a Hugging Face id the caller passes the
function that fetches config.json and the weights' size (:mod:`pykaito.client.hub`), so this module
does no network I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pykaito.catalog.types import GIB, ModelPreset
from pykaito.errors import CatalogError

CONFIG = "config.json"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_BYTES_PER_PARAM = {"bfloat16": 2, "float16": 2, "float32": 4}


def is_hf_id(ref: str) -> bool:
    """``org/model`` (and not an existing local path)."""
    return bool(HF_ID.match(ref)) and not Path(ref).exists()


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal models keep the language model's shapes under ``text_config``."""
    for key in ("text_config", "llm_config", "language_config"):
        inner = config.get(key)
        if isinstance(inner, Mapping) and _first(inner, "num_hidden_layers", "n_layer", "num_layers"):
            return {**config, **inner}
    return config


def shapes(config: Mapping[str, Any], source: str = CONFIG) -> dict[str, Any]:
    """Layers, heads, KV heads, hidden size, head_dim, context, dtype and KV bytes per token."""
    cfg = _text_config(config)
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads")
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    if not isinstance(layers, int) or not isinstance(heads, int) or not isinstance(hidden, int):
        raise CatalogError(
            f"{source}: cannot read the model's shape (num_hidden_layers, num_attention_heads, "
            "hidden_size); is it a text-generation model?"
        )
    kv_heads = _first(cfg, "num_key_value_heads", "n_head_kv", "num_kv_heads")
    if kv_heads is None:
        kv_heads = 1 if cfg.get("multi_query") else heads
    head_dim = _first(cfg, "head_dim") or hidden // heads
    context = _first(cfg, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
    dtype = str(_first(cfg, "torch_dtype", "dtype") or "bfloat16")
    lora_rank = cfg.get("kv_lora_rank")
    if lora_rank:  # multi-head latent attention: one compressed latent plus the rope key per layer
        kv_per_token = (int(lora_rank) + int(cfg.get("qk_rope_head_dim") or 0)) * layers * 2
        kv_heads = None
    else:
        kv_per_token = 2 * int(kv_heads) * int(head_dim) * layers * 2
    return {
        "layers": layers,
        "attention_heads": heads,
        "kv_heads": kv_heads,
        "hidden_size": hidden,
        "head_dim": int(head_dim),
        "context_length": int(context) if context else 2048,
        "dtype": dtype,
        "kv_bytes_per_token": kv_per_token,
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read it ({exc.strerror})") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object")
    return data


def _index_size(index: Mapping[str, Any], source: str) -> int:
    total = (index.get("metadata") or {}).get("total_size")
    if not isinstance(total, (int, float)) or total <= 0:
        raise CatalogError(f"{source}: no metadata.total_size in the weight index")
    return int(total)


def weight_bytes(directory: Path) -> int:
    """The weights' size: the index's total_size, else the sizes of the weight files."""
    for name in INDEXES:
        if (directory / name).is_file():
            return _index_size(_read_json(directory / name), str(directory / name))
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise CatalogError(
            f"{directory}: no weights found (model.safetensors.index.json or *.safetensors files)"
        )
    return sum(f.stat().st_size for f in files)


def preset_from(
    config: Mapping[str, Any], size_bytes: int, *, name: str, model_id: str, source: str
) -> ModelPreset:
    """A ModelPreset from a parsed config.json and the weights' size in bytes."""
    figures = shapes(config, f"{model_id}/{CONFIG}")
    per_param = _BYTES_PER_PARAM.get(figures["dtype"])
    params = round(size_bytes / per_param / 1e9, 3) if per_param else None
    return ModelPreset(
        name=name,
        model_id=model_id,
        size_gib=round(size_bytes / GIB, 3),
        params_billion=params,
        source=source,
        description=f"described from {CONFIG} ({source})",
        **figures,
    )


def describe_directory(directory: str | Path) -> ModelPreset:
    """Describe a model stored in a local directory (works offline)."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise CatalogError(f"{directory}: no such model directory")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise CatalogError(f"{path}: no {CONFIG}; a model directory holds config.json and its weights")
    config = _read_json(config_path)
    shapes(config, str(config_path))  # a config that is not a language model fails before the weights
    return preset_from(
        config,
        weight_bytes(path),
        name=path.resolve().name,
        model_id=str(path),
        source="local",
    )


HubFetch = Callable[[str], tuple[Mapping[str, Any], int]]
"""Reads a Hugging Face id's config.json and weight size: :func:`pykaito.client.hub.fetch_model_files`."""


def describe_model(ref: str | Path, *, hub: HubFetch | None = None) -> ModelPreset:
    """Describe a local model directory, or an ``org/model`` Hugging Face id read through ``hub``."""
    text = str(ref)
    if isinstance(ref, Path) or Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return describe_directory(ref)
    if not HF_ID.match(text):
        raise CatalogError(
            f"{text!r} is neither a local model directory nor a Hugging Face id like org/model"
        )
    if hub is None:
        raise CatalogError(
            f"{text} is a Hugging Face id and no hub lookup was given: pass "
            "hub=pykaito.client.hub.fetch_model_files, or a local model directory"
        )
    config, size = hub(text)
    return preset_from(config, size, name=text, model_id=text, source="huggingface")
