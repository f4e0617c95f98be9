"""Shared test set-up: every test gets its own data directory through KAITO_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def kaito_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kaito-home"
    home.mkdir()
    monkeypatch.setenv("KAITO_HOME", str(home))
    return home
