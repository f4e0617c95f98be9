"""The pure parts of the model store: what NAME means, the GGUF header, the store's bookkeeping."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pykaito.catalog import load_catalog
from pykaito.errors import CatalogError, InputError
from pykaito.models import ModelStore, StoredModel, gguf, parse_ref
from pykaito.models.gguf import describe
from pykaito.models.refs import choose_gguf


@pytest.mark.parametrize(
    ("text", "kind", "name", "repo", "file", "quantization"),
    [
        pytest.param(
            "phi-4-mini-instruct", "preset", "phi-4-mini-instruct", "unsloth/Phi-4-mini-instruct-GGUF",
            "Phi-4-mini-instruct-Q4_K_M.gguf", "Q4_K_M", id="preset",
        ),
        pytest.param(
            "microsoft/Phi-4-mini-instruct", "preset", "phi-4-mini-instruct",
            "unsloth/Phi-4-mini-instruct-GGUF",
            "Phi-4-mini-instruct-Q4_K_M.gguf", "Q4_K_M", id="preset by model id",
        ),
        pytest.param("acme/x-GGUF", "huggingface", "acme/x-GGUF", "acme/x-GGUF", "", "", id="repo"),
        pytest.param(
            "acme/x-GGUF:x.Q5_K_M.gguf", "huggingface", "acme/x-GGUF:x.Q5_K_M.gguf", "acme/x-GGUF",
            "x.Q5_K_M.gguf", "Q5_K_M", id="repo and file",
        ),
        pytest.param(
            "https://example.com/m/tiny-q8_0.gguf?download=1", "url", "tiny-q8_0", "",
            "tiny-q8_0.gguf", "Q8_0",
            id="url",
        ),
    ],
)  # fmt: skip
def test_parse_ref(text: str, kind: str, name: str, repo: str, file: str, quantization: str) -> None:
    ref = parse_ref(text, load_catalog())
    assert (ref.kind, ref.name, ref.repo, ref.file, ref.quantization) == (
        kind,
        name,
        repo,
        file,
        quantization,
    )


def test_preset_ref_carries_the_catalog_checksum() -> None:
    ref = parse_ref("phi-4-mini-instruct", load_catalog())
    assert ref.size == 2491874272
    assert ref.sha256 == "88c00229914083cd112853aab84ed51b87bdf6b9ce42f532d8c85c7c63b1730a"
    assert ref.revision == "78eb92a46fc37e6b524df991ed9aca9bc6aa7b80"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("phi-4", "phi-4 has no GGUF for the CPU engine", id="preset without gguf"),
        pytest.param("phi-4-mni", "did you mean .*'phi-4-mini-instruct'", id="typo"),
        pytest.param("acme/x:model.bin", "must be a .gguf file", id="not a gguf"),
        pytest.param("https://example.com/model.bin", "the URL must name a .gguf file", id="url not gguf"),
    ],
)
def test_parse_ref_errors(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_ref(text, load_catalog())


def test_bad_sha256_is_refused() -> None:
    with pytest.raises(CatalogError, match="is not a SHA-256"):
        parse_ref("acme/x-GGUF", load_catalog(), sha256="abc")


@pytest.mark.parametrize(
    ("files", "chosen"),
    [
        pytest.param(["a-Q8_0.gguf", "a-Q4_K_M.gguf", "README.md"], "a-Q4_K_M.gguf", id="prefers Q4_K_M"),
        pytest.param(["a.gguf"], "a.gguf", id="the only one"),
        pytest.param(["a-F16.gguf", "a-Q2_K.gguf"], None, id="ambiguous"),
        pytest.param(["mmproj-Q4_K_M.gguf", "a-Q6_K.gguf"], "a-Q6_K.gguf", id="skips projectors"),
        pytest.param(["a-Q4_K_M-00001-of-00002.gguf"], None, id="split files are not taken"),
    ],
)
def test_choose_gguf(files: list[str], chosen: str | None) -> None:
    assert choose_gguf(files) == chosen


def test_gguf_header_of_the_embedded_model_matches_the_catalog(gguf: Path) -> None:
    info = describe(gguf)
    preset = load_catalog().preset("smollm2-135m-instruct")
    assert info.architecture == "llama" and info.quantization == "Q4_1"
    assert info.layers == preset.layers and info.context_length == preset.context_length
    assert info.kv_bytes_per_token == preset.kv_bytes_per_token


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"<html>not found</html>")
    with pytest.raises(InputError, match="is not a GGUF file"):
        describe(bogus)


def test_store_ignores_directories_without_a_manifest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    (store.directory("half") / "x.gguf.part").parent.mkdir(parents=True)
    (store.directory("half") / "x.gguf.part").write_bytes(b"GGUF")
    assert store.models() == []
    weights = store.directory("org/repo:x.gguf") / "x.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"GGUF")
    model = StoredModel(
        name="org/repo:x.gguf",
        file="x.gguf",
        path=weights,
        size=4,
        sha256="0" * 64,
        quantization="",
        source="huggingface",
        repo="org/repo",
    )
    store.record(model)
    assert [m.name for m in store.models()] == ["org/repo:x.gguf"]
    assert weights.parent.name == "org--repo--x.gguf"
    assert store.touch(model).last_used
    assert store.get("org/repo").name == "org/repo:x.gguf"


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_gguf_header_reads_per_layer_kv_heads_and_passes_over_the_tokenizer(tmp_path: Path) -> None:
    """80 layers with 2 then 4 KV heads (an array longer than the tokenizer-skipping threshold)."""
    uint32, string, array = 4, 8, 9
    entries = [
        _gguf_string("general.architecture") + struct.pack("<I", string) + _gguf_string("toy"),
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", array, string, 100)
        + b"".join(_gguf_string(f"tok{i}") for i in range(100)),
        _gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", array, 6, 100) + b"\0" * 400,
        _gguf_string("toy.block_count") + struct.pack("<II", uint32, 80),
        _gguf_string("toy.attention.head_count") + struct.pack("<II", uint32, 8),
        _gguf_string("toy.embedding_length") + struct.pack("<II", uint32, 1024),
        _gguf_string("toy.attention.head_count_kv")
        + struct.pack("<IIQ", array, uint32, 80)
        + struct.pack("<80I", *([2] * 40 + [4] * 40)),
        _gguf_string("general.file_type") + struct.pack("<II", uint32, 15),
    ]
    path = tmp_path / "toy.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + b"".join(entries))
    meta = gguf.read_metadata(path)
    assert meta["tokenizer.ggml.tokens"] is None and meta["tokenizer.ggml.scores"] is None
    info = gguf.describe(path)
    assert info.architecture == "toy" and info.layers == 80 and info.quantization == "Q4_K_M"
    assert info.kv_bytes_per_token == (40 * 2 + 40 * 4) * (128 + 128) * 2
