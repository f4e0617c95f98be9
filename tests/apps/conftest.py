"""Fixtures of the chat app tests: the real runtime, free ports, the packaged web app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apps.runtime import shared_runtime, stop_shared_runtime


@pytest.fixture(autouse=True)
def no_generated_titles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Titles stay the first sentence (no extra request) unless a test turns them on."""
    monkeypatch.setenv("KAITO_TITLES", "0")


@pytest.fixture(scope="session")
def runtime_url() -> Iterator[str]:
    """The URL of the real server with SmolLM2-135M, shared by the whole session."""
    handle = shared_runtime()
    yield handle.url
    stop_shared_runtime()
