"""The server over the wire (uvicorn on 127.0.0.1) with a fake engine: lifecycle, disconnects, ports."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import openai
import pytest

from pykaito.errors import EngineError, InputError
from pykaito.runtime.serve import bind_socket, start_in_thread, url_for
from pykaito.runtime.settings import ServerSettings
from tests.runtime.fake_engine import FakeEngine


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_health_is_503_while_loading_then_200() -> None:
    gate = threading.Event()
    fake = FakeEngine(load_gate=gate)
    with start_in_thread(fake, ServerSettings(port=0), wait_ready=False) as server:
        loading = httpx.get(server.url + "/health")
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading", "reason": "loading the model"}
        refused = httpx.post(
            server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_loading"
        gate.set()
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 200)
        assert fake.started == 1
    assert fake.stopped == 1  # stopping the server stops the engine


def test_a_model_that_fails_to_load() -> None:
    fake = FakeEngine(load_error="model file /nowhere.gguf does not exist")
    with pytest.raises(EngineError, match="does not exist"):
        start_in_thread(fake, ServerSettings(port=0))
    assert fake.stopped == 1
    with start_in_thread(fake, ServerSettings(port=0), wait_ready=False) as server:
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 503)
        health = httpx.get(server.url + "/health").json()
        assert health["status"] == "failed"
        assert "does not exist" in health["reason"]


def test_openai_client_against_the_fake() -> None:
    fake = FakeEngine()
    with start_in_thread(fake, ServerSettings(port=0, api_key="k")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content == "Hello there,"
        assert reply.choices[0].finish_reason == "length"
        chunks = list(
            client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake.reply
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(
            fake.reply.split(" ")
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError, match="not supported yet"):
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "x"}], n=2
            )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_client_disconnect_closes_the_engine_stream() -> None:
    fake = FakeEngine(token_delay=0.05, reply=" ".join(["word"] * 200))
    with start_in_thread(fake, ServerSettings(port=0)) as server:
        body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with (
            httpx.Client() as http,
            http.stream("POST", server.base_url + "/chat/completions", json=body) as stream,
        ):
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")
            assert next(lines) == ""
            assert next(lines).startswith("data: ")
            assert fake.stats().running == 1
        # Leaving the block closed the connection mid-stream.
        wait_for(lambda: fake.stats().running == 0)
        (request_id,) = fake.finished
        assert fake.finished[request_id] == "closed"
        metrics = httpx.get(server.url + "/metrics").text
        assert 'vllm:request_success_total{finished_reason="abort",model_name="fake-model"} 1.0' in metrics
        assert 'vllm:num_requests_running{model_name="fake-model"} 0.0' in metrics


def test_client_disconnect_before_the_reply_frees_the_request() -> None:
    fake = FakeEngine(token_delay=0.05, reply=" ".join(["word"] * 200))
    with start_in_thread(fake, ServerSettings(port=0)) as server:
        body = {"messages": [{"role": "user", "content": "Hi"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.base_url + "/chat/completions", json=body, timeout=0.3)
        wait_for(lambda: fake.stats().running == 0 and len(fake.finished) == 1)
        assert list(fake.finished.values()) == ["closed"]


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_socket("127.0.0.1", port)
        with pytest.raises(InputError, match="already in use"):
            start_in_thread(FakeEngine(), ServerSettings(port=port))


def test_url_for() -> None:
    assert url_for("0.0.0.0", 5000) == "http://127.0.0.1:5000"
    assert url_for("::1", 80) == "http://[::1]:80"
    assert url_for("localhost", 8080) == "http://localhost:8080"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_stop_ends_streams_in_flight_with_abort(path: str) -> None:
    fake = FakeEngine(token_delay=2.0)  # a reply that would take about half a minute
    body: dict[str, object] = {"model": "fake-model", "max_tokens": 100, "stream": True}
    body.update({"prompt": "hi"} if "chat" not in path else {"messages": [{"role": "user", "content": "hi"}]})
    server = start_in_thread(fake, ServerSettings(port=0))
    stopper: threading.Thread | None = None
    try:
        with httpx.stream("POST", server.url + path, json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            data = [next(line for line in lines if line.startswith("data: "))]
            stopper = threading.Thread(target=server.stop)
            stopped = time.monotonic()
            stopper.start()
            data += [line for line in lines if line.startswith("data: ")]
            ended = time.monotonic() - stopped
    finally:
        server.stop()
    assert stopper is not None
    stopper.join(30)
    assert ended < 5.0, f"the stream ended {ended:.1f} s after stop()"
    assert data[-1] == "data: [DONE]"
    assert '"finish_reason":"abort"' in data[-2]
    assert not stopper.is_alive() and not server.thread.is_alive()
    assert list(fake.finished.values()) == ["closed"], "the engine's stream was closed"
