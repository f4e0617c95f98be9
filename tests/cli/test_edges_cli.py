"""Small edges of the CLI: a missing kubeconfig is named as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Kaito


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_kubeconfig_that_is_not_a_file(kaito: Kaito, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope" if kind == "missing" else tmp_path
    result = kaito("get", "--kubeconfig", str(path))
    assert result.code != 0
    expected = "does not exist" if kind == "missing" else "is a directory"
    assert f"--kubeconfig {path}: the file {expected}" in result.err
    assert "Traceback" not in result.err
