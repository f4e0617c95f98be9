"""Reading a model's ``config.json`` and weight size from the Hugging Face Hub.

The network half of describing a model: :func:`fetch_model_files` downloads config.json and the
safetensors index (they land in the local Hugging Face cache) or asks for a single weight file's
size, and hands back plain data; :func:`pykaito.catalog.models.describe_model` turns that into a
preset. Hub failures become :class:`CatalogError` with a message that says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pykaito.errors import CatalogError

CONFIG = "config.json"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except OSError as exc:
        raise CatalogError(f"{source}: cannot read it ({exc.strerror})") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a JSON object")
    return data


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


def fetch_model_files(
    model_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, Any], int]:
    """``org/model``'s parsed config.json and its weights' size in bytes (config and index only)."""
    try:
        from huggingface_hub import errors, get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError as exc:
        raise CatalogError(
            f"cannot describe {model_id}: the Hugging Face client is not installed; "
            "install it with `pip install 'pykaito[hub]'`, or pass a local model directory"
        ) from exc

    def download(filename: str) -> Path:
        return Path(hf_hub_download(model_id, filename, revision=revision, token=token, cache_dir=cache_dir))

    hub_errors = (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, errors.EntryNotFoundError, OSError)
    try:
        config = _read_json(download(CONFIG), f"{model_id}/{CONFIG}")
        size = _weight_bytes(model_id, download, revision, token, get_hf_file_metadata, hf_hub_url)
    except CatalogError:
        raise
    except hub_errors as exc:
        raise _hub_error(model_id, exc) from exc
    return config, size


def _weight_bytes(
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
        total = (_read_json(path, f"{model_id}/{name}").get("metadata") or {}).get("total_size")
        if not isinstance(total, (int, float)) or total <= 0:
            raise CatalogError(f"{model_id}/{name}: no metadata.total_size in the weight index")
        return int(total)
    for name in SINGLE_FILES:
        try:
            found = metadata(url(model_id, name, revision=revision), token=token)
        except errors.RemoteEntryNotFoundError:
            continue
        if found.size:
            return int(found.size)
    raise CatalogError(f"{model_id}: no safetensors weights found on Hugging Face")
