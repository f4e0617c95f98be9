"""Running the real ``kaito`` entry point in-process and capturing its transcript."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pykaito.cli import main as cli_main
from pykaito.cli import output


@dataclass
class Result:
    code: int
    out: str
    err: str


Kaito = Callable[..., Result]


@pytest.fixture
def kaito(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Kaito:
    """Run the real ``kaito`` entry point in-process with a wide terminal."""
    monkeypatch.setattr(output.console, "width", 200)
    monkeypatch.setattr(output.err_console, "width", 200)

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["kaito", *args])
        code = 0
        try:
            cli_main.main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
