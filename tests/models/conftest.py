"""A stand-in Hugging Face hub per test, holding the embedded SmolLM2 GGUF under the catalog's repository."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pykaito.catalog import load_catalog
from pykaito.catalog.embedded import embedded_gguf_path
from tests.cli.conftest import Kaito, Result, kaito  # noqa: F401 (the in-process kaito fixture)
from tests.models.hubstub import Hub, running_hub

PRESET = "smollm2-135m-instruct"
KAITO = [sys.executable, "-m", "pykaito.cli.main"]


@pytest.fixture
def gguf() -> Path:
    return embedded_gguf_path()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gguf: Path) -> Iterator[Hub]:
    """The stand-in hub, with the catalog's SmolLM2 GGUF published; HF_ENDPOINT points at it."""
    source = load_catalog().preset(PRESET).cpu_gguf
    assert source is not None
    with running_hub() as stand_in:
        stand_in.add(source.repo, {source.file: gguf})
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield stand_in


@pytest.fixture
def env() -> dict[str, str]:
    """The environment for a ``kaito`` subprocess (after the fixtures above have set theirs)."""
    return dict(os.environ)
