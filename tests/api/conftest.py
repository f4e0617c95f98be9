"""Shared values for the Workspace API tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def example_params() -> list[object]:
    return [pytest.param(path, id=path.name) for path in EXAMPLE_FILES]
