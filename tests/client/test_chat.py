"""The chat client over the wire: a stand-in server for error paths, the real runtime for the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pykaito.client.chat import (
    ChatClient,
    ChatError,
    ChatParams,
    EndpointUnreachable,
    ServerNotReady,
    SessionTotals,
    normalize_endpoint,
)
from tests.apps.runtime import shared_runtime, stop_shared_runtime
from tests.apps.standin import Behaviour, standin_server
from tests.netutil import free_port


@pytest.fixture(scope="session")
def runtime_url() -> Iterator[str]:
    yield shared_runtime().url
    stop_shared_runtime()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("http://localhost:8080", "http://localhost:8080", id="plain"),
        pytest.param("localhost:8080/", "http://localhost:8080", id="no-scheme"),
        pytest.param("http://h:1/v1/", "http://h:1", id="v1-suffix"),
        pytest.param("https://x.example/v1", "https://x.example", id="https"),
        pytest.param("  ", "http://localhost:8080", id="empty"),
    ],
)
def test_normalize_endpoint(given: str, expected: str) -> None:
    assert normalize_endpoint(given) == expected


def test_streams_deltas_and_measures_reply() -> None:
    with standin_server(Behaviour(delay_s=0.01)) as (url, b), ChatClient(url) as client:
        reply = client.stream_chat([{"role": "user", "content": "hi"}], ChatParams(max_tokens=16))
        pieces = list(reply)
    assert pieces == list(b.words)
    assert reply.text == "Hello from the stand-in."
    stats = reply.stats
    assert stats is not None
    assert (stats.prompt_tokens, stats.completion_tokens) == (11, 5)
    assert stats.usage_reported
    assert stats.finish_reason == "stop"
    assert stats.ttft_s is not None and 0 < stats.ttft_s < stats.duration_s
    assert stats.tokens_per_s is not None and stats.tokens_per_s > 0
    sent = b.requests[0]
    assert sent["model"] == "standin-model"  # picked from /v1/models
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 16


def test_counts_chunks_when_the_server_sends_no_usage() -> None:
    with standin_server(Behaviour(send_usage=False)) as (url, _), ChatClient(url) as client:
        text, stats = client.chat([{"role": "user", "content": "hi"}], ChatParams(max_tokens=3), model="m")
    assert text == "Hello from the"
    assert stats.prompt_tokens is None
    assert stats.completion_tokens == 3
    assert not stats.usage_reported
    assert stats.finish_reason == "length"


def test_retries_while_the_server_is_loading() -> None:
    waits: list[float] = []
    behaviour = Behaviour(chat_failures_before_success=2)
    with standin_server(behaviour) as (url, b), ChatClient(url, sleep=waits.append) as client:
        text, _ = client.chat([{"role": "user", "content": "hi"}], model="m")
    assert text == "Hello from the stand-in."
    assert waits == [0.5, 1.0]  # exponential backoff
    assert len(b.requests) == 3


def test_gives_up_on_a_server_that_stays_loading() -> None:
    waits: list[float] = []
    behaviour = Behaviour(chat_failures_before_success=10)
    with (
        standin_server(behaviour) as (url, b),
        ChatClient(url, retries=2, sleep=waits.append) as client,
        pytest.raises(ServerNotReady, match="still loading its model"),
    ):
        client.chat([{"role": "user", "content": "hi"}], model="m")
    assert waits == [0.5, 1.0]
    assert len(b.requests) == 3


def test_does_not_retry_client_errors() -> None:
    waits: list[float] = []
    with (
        standin_server(Behaviour(chat_status=400)) as (url, b),
        ChatClient(url, sleep=waits.append) as client,
        pytest.raises(ChatError, match="HTTP 400: max_tokens must be at least 1"),
    ):
        client.chat([{"role": "user", "content": "hi"}], model="m")
    assert waits == []
    assert len(b.requests) == 1


def test_unreachable_endpoint_is_one_friendly_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    client = ChatClient(url, retries=2, sleep=waits.append)
    with pytest.raises(EndpointUnreachable) as caught:
        client.list_models()
    assert str(caught.value) == f"cannot reach {url}: is `kaito connect` or `kaito up` running?"
    assert waits == [0.5, 1.0]
    health = client.health()
    assert (health.reachable, health.ready, health.label) == (False, False, "offline")


def test_health_tells_loading_from_ready() -> None:
    with standin_server(Behaviour(health_status=503)) as (url, b), ChatClient(url) as client:
        assert client.health().label == "loading"
        b.health_status = 200
        assert client.health().label == "connected"


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with standin_server(Behaviour(api_key="s3cret")) as (url, b):
        with ChatClient(url) as client, pytest.raises(ChatError, match="KAITO_API_KEY"):
            client.list_models()
        monkeypatch.setenv("KAITO_API_KEY", "s3cret")
        with ChatClient(url) as client:
            assert client.list_models() == ["standin-model"]
            client.health()
        assert b.headers[-1]["Authorization"] == "Bearer s3cret"


def test_close_stops_a_reply_and_keeps_the_text() -> None:
    words = tuple(f" w{i}" for i in range(50))
    with standin_server(Behaviour(words=words, delay_s=0.02)) as (url, _), ChatClient(url) as client:
        reply = client.stream_chat([{"role": "user", "content": "hi"}], model="m")
        received = []
        for piece in reply:
            received.append(piece)
            if len(received) == 3:
                reply.close()
    assert reply.text == " w0 w1 w2"
    assert reply.stats is not None
    assert reply.stats.finish_reason == "stopped"
    assert reply.stats.completion_tokens == 3


def test_session_totals() -> None:
    with standin_server() as (url, _), ChatClient(url) as client:
        totals = SessionTotals()
        for _ in range(2):
            _, stats = client.chat([{"role": "user", "content": "hi"}], model="m")
            totals.add(stats)
    assert (totals.replies, totals.prompt_tokens, totals.completion_tokens) == (2, 22, 10)
    assert totals.mean_ttft_s is not None


@pytest.mark.slow
def test_real_runtime_streams_with_usage(runtime_url: str) -> None:
    with ChatClient(runtime_url) as client:
        models = client.list_models()
        assert models
        assert client.health().ready
        reply = client.stream_chat(
            [{"role": "user", "content": "Say hello."}], ChatParams(max_tokens=16, temperature=0.0)
        )
        pieces = list(reply)
    assert pieces and "".join(pieces) == reply.text
    stats = reply.stats
    assert stats is not None and stats.usage_reported
    assert stats.prompt_tokens is not None and stats.prompt_tokens > 0
    assert 0 < stats.completion_tokens <= 16
    assert stats.finish_reason in ("stop", "length")
    assert stats.ttft_s is not None and stats.ttft_s > 0
    # the prompt's tokens, as /tokenize counts them, are what the usage report said
    chat = [{"role": "user", "content": "Say hello."}]
    with ChatClient(runtime_url) as client:
        assert client.count_tokens(chat, models[0]) == stats.prompt_tokens


def test_count_tokens_is_none_where_the_server_has_no_tokenize() -> None:
    with ChatClient(f"http://127.0.0.1:{free_port()}") as client:
        assert client.count_tokens([{"role": "user", "content": "hi"}]) is None


def test_a_stream_that_ends_without_a_finish_reason_was_cut() -> None:
    with standin_server(Behaviour(words=("a", "b", "c"), cut_after=2)) as (url, _), ChatClient(url) as client:
        reply = client.stream_chat([{"role": "user", "content": "hi"}])
        assert list(reply) == ["a", "b"]
        reply.close()
    assert reply.stats is not None and reply.stats.finish_reason == "error"
