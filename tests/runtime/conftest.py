"""Fixtures of the runtime tests: an in-process client over the app with a fake engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pykaito.runtime.app import create_app
from pykaito.runtime.settings import ServerSettings
from tests.runtime.fake_engine import FakeEngine

ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Build clients over ``create_app(engine, ServerSettings(**settings))``, closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(engine: FakeEngine, **settings: Any) -> httpx.AsyncClient:
        app = create_app(engine, ServerSettings(**settings), manage_engine=False)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: ClientFactory, fake: FakeEngine) -> httpx.AsyncClient:
    return make_client(fake)


def sse_events(body: str) -> list[Any]:
    """The data of each server-sent event; ``[DONE]`` stays a string."""
    events: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_error(
    response: httpx.Response, status: int, *, param: str | None = None, text: str = ""
) -> dict[str, Any]:
    """The response is an OpenAI-shaped error with this status (and parameter, and message text)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if text:
        assert text in error["message"], error
    return error
