"""Describe any model from its ``config.json`` and weight files: a local directory or a Hugging Face id.

The same code reads both: a local directory directly, a Hugging Face id through
``huggingface_hub.hf_hub_download`` (config.json and the safetensors index land in the local cache).
Hub failures become :class:`CatalogError` with a message that says what to do.
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


def _hub_error(model_id: str, exc: Exception) -> CatalogError:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return CatalogError(f"{model_id} is gated on Hugging Face: accept its license and set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return CatalogError(f"{model_id}: no such model on Hugging Face (or it is private: set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return CatalogError(f"{model_id}: no such revision on Hugging Face")
    if isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)):
        return CatalogError(
            f"cannot describe {model_id}: the Hugging Face Hub cannot be reached (offline, or "
            "HF_HUB_OFFLINE is set) and its config.json is not in the local cache; connect, or pass "
            "a local model directory"
        )
    return CatalogError(f"cannot describe {model_id} from Hugging Face: {exc}")


def describe_hub_model(
    model_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> ModelPreset:
    """Describe an ``org/model`` from Hugging Face: config.json and the weight index, nothing else."""
    from huggingface_hub import errors, get_hf_file_metadata, hf_hub_download, hf_hub_url

    def download(filename: str) -> Path:
        return Path(hf_hub_download(model_id, filename, revision=revision, token=token, cache_dir=cache_dir))

    hub_errors = (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, errors.EntryNotFoundError, OSError)
    try:
        config = _read_json(download(CONFIG))
        size = _hub_weight_bytes(model_id, download, revision, token, get_hf_file_metadata, hf_hub_url)
    except CatalogError:
        raise
    except hub_errors as exc:
        raise _hub_error(model_id, exc) from exc
    return preset_from(config, size, name=model_id, model_id=model_id, source="huggingface")


def _hub_weight_bytes(
    model_id: str,
    download: Callable[[str], Path],
    revision: str | None,
    token: str | None,
    metadata: Callable[..., Any],
    url: Callable[..., str],
) -> int:
    from huggingface_hub import errors

    for name in INDEXES:
        try:
            path = download(name)
        except errors.RemoteEntryNotFoundError:
            continue
        return _index_size(_read_json(path), f"{model_id}/{name}")
    for name in SINGLE_FILES:
        try:
            found = metadata(url(model_id, name, revision=revision), token=token)
        except errors.RemoteEntryNotFoundError:
            continue
        if found.size:
            return int(found.size)
    raise CatalogError(f"{model_id}: no safetensors weights found on Hugging Face")


def describe_model(ref: str | Path, **hub_options: Any) -> ModelPreset:
    """Describe a local model directory or an ``org/model`` Hugging Face id as a ModelPreset."""
    text = str(ref)
    if isinstance(ref, Path) or Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return describe_directory(ref)
    if not HF_ID.match(text):
        raise CatalogError(
            f"{text!r} is neither a local model directory nor a Hugging Face id like org/model"
        )
    return describe_hub_model(text, **hub_options)
