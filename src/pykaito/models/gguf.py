"""Read what sizing needs from a GGUF file's header: architecture, context, shapes and quantization.

Only the key/value metadata at the start of the file is read (tensors are skipped), so this takes
milliseconds even for a large model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pykaito.errors import InputError

MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
# general.file_type → the quantization llama.cpp names it by.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 38: "MXFP4",
}  # fmt: skip


@dataclass(frozen=True)
class GgufInfo:
    """The header facts sizing uses. ``kv_bytes_per_token`` assumes llama.cpp's default f16 KV cache."""

    architecture: str
    context_length: int | None
    layers: int | None
    kv_bytes_per_token: int | None
    quantization: str


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the file ends inside its header")
    return data


def _unpack(stream: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(stream, struct.calcsize(fmt)))[0]


def _string(stream: BinaryIO) -> str:
    return _read(stream, _unpack(stream, "<Q")).decode("utf-8", errors="replace")


def _skip_strings(stream: BinaryIO, count: int) -> None:
    length = struct.Struct("<Q")
    for _ in range(count):
        stream.seek(length.unpack(_read(stream, 8))[0], 1)


def _value(stream: BinaryIO, kind: int, skip: bool = False) -> Any:
    """One value; with ``skip``, a large array (the tokenizer's) is passed over and None returned."""
    if kind in _SCALARS:
        return _unpack(stream, _SCALARS[kind])
    if kind == _STRING:
        return _string(stream)
    if kind == _ARRAY:
        inner, count = _unpack(stream, "<I"), _unpack(stream, "<Q")
        if skip and count > 64 and inner in _SCALARS:
            stream.seek(count * struct.calcsize(_SCALARS[inner]), 1)
            return None
        if skip and count > 64 and inner == _STRING:
            _skip_strings(stream, count)
            return None
        return [_value(stream, inner) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_metadata(path: Path) -> dict[str, Any]:
    """The header's key/value pairs (the tokenizer's large arrays come back as ``None``)."""
    try:
        with path.open("rb") as stream:
            if _read(stream, 4) != MAGIC:
                raise InputError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
            version = _unpack(stream, "<I")
            if version < 2:
                raise InputError(f"{path} is GGUF version {version}; llama.cpp reads version 2 and later")
            _unpack(stream, "<Q")  # tensor count
            count = _unpack(stream, "<Q")
            metadata: dict[str, Any] = {}
            for _ in range(count):
                key = _string(stream)
                metadata[key] = _value(stream, _unpack(stream, "<I"), key.startswith("tokenizer."))
            return metadata
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise InputError(f"cannot read the GGUF header of {path}: {exc}") from exc


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe(path: Path) -> GgufInfo:
    """Architecture, context, layers, KV bytes per token and quantization of a GGUF file."""
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))

    def key(name: str) -> Any:
        return meta.get(f"{arch}.{name}")

    layers = _int(key("block_count"))
    heads = _int(key("attention.head_count"))
    embedding = _int(key("embedding_length"))
    kv_heads_raw = key("attention.head_count_kv")
    key_length = _int(key("attention.key_length"))
    value_length = _int(key("attention.value_length"))
    if key_length is None and heads and embedding:
        key_length = embedding // heads
    value_length = value_length or key_length
    kv_bytes = None
    if layers and key_length and value_length:
        if isinstance(kv_heads_raw, list):  # per-layer KV heads
            kv_total = sum(int(h) for h in kv_heads_raw)
        else:
            kv_total = layers * (_int(kv_heads_raw) or heads or 0)
        kv_bytes = kv_total * (key_length + value_length) * 2 or None
    file_type = _int(meta.get("general.file_type"))
    return GgufInfo(
        architecture=arch,
        context_length=_int(key("context_length")),
        layers=layers,
        kv_bytes_per_token=kv_bytes,
        quantization=FILE_TYPES.get(file_type, "") if file_type is not None else "",
    )
