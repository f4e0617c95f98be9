"""The gate in front of ``transformers serve``: key, in-flight limit, streams and disconnects, over the wire.

The engine behind it is the fake engine served by pykaito's own server on 127.0.0.1, which
speaks the same OpenAI protocol as ``transformers serve``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from pykaito.runtime.launchers.gate import GateSettings, gate_app, run_gated
from pykaito.runtime.serve import ServerHandle, bind_socket, start_in_thread
from pykaito.runtime.settings import ServerSettings
from tests.runtime.fake_engine import FakeEngine

KEY = "gate-key"
CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


def wait_for(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Gate:
    def __init__(self, upstream: str, max_in_flight: int) -> None:
        self.app, self.in_flight = gate_app(upstream, api_key=KEY, max_in_flight=max_in_flight)
        sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, lifespan="on", log_config=None))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        self._sock = sock
        wait_for(lambda: self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self._sock.close()


@pytest.fixture
def upstream() -> Iterator[tuple[FakeEngine, ServerHandle]]:
    fake = FakeEngine(max_running=8, max_waiting=8)
    with start_in_thread(fake, ServerSettings(port=0)) as handle:
        yield fake, handle


@pytest.fixture
def gate(upstream: tuple[FakeEngine, ServerHandle]) -> Iterator[Gate]:
    g = Gate(upstream[1].url, max_in_flight=3)
    yield g
    g.stop()


def test_the_key_is_required_except_for_health_and_metrics(gate: Gate) -> None:
    missing = httpx.post(gate.url + "/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(gate.url + "/v1/models", headers={"authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(gate.url + "/health").status_code == 200
    assert httpx.get(gate.url + "/metrics").status_code == 200
    assert gate.in_flight.value == 0


def test_the_openai_client_works_through_the_gate(gate: Gate) -> None:
    client = openai.OpenAI(base_url=gate.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert client.models.list().data[0].id == "fake-model"
    assert gate.in_flight.value == 0


def test_a_non_json_body_is_415_at_the_gate(gate: Gate, upstream: tuple[FakeEngine, ServerHandle]) -> None:
    response = httpx.post(
        gate.url + "/v1/completions",
        content=b'{"prompt": "x"}',
        headers={"authorization": f"Bearer {KEY}", "content-type": "text/plain"},
    )
    assert response.status_code == 415
    assert not upstream[0].requests


def test_generations_over_the_limit_get_429_and_the_count_drains(
    upstream: tuple[FakeEngine, ServerHandle],
) -> None:
    fake, handle = upstream
    fake.token_delay = 0.05  # about 0.6 s a reply
    gate = Gate(handle.url, max_in_flight=3)
    try:

        def post(_: int) -> httpx.Response:
            return httpx.post(
                gate.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"},
                timeout=60,
            )  # fmt: skip

        with ThreadPoolExecutor(12) as pool:
            statuses = [r.status_code for r in pool.map(post, range(12))]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 3
        assert statuses.count(429) >= 1, "no request was refused over the limit"
        wait_for(lambda: gate.in_flight.value == 0)
        assert post(0).status_code == 200  # room again once the replies are done
    finally:
        gate.stop()


def test_a_client_that_leaves_stops_the_engine_stream(upstream: tuple[FakeEngine, ServerHandle]) -> None:
    fake, handle = upstream
    fake.token_delay = 0.2  # a reply of about 3 s
    gate = Gate(handle.url, max_in_flight=3)
    try:
        with httpx.stream(
            "POST",
            gate.url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        wait_for(lambda: "closed" in fake.finished.values())
        wait_for(lambda: gate.in_flight.value == 0)
    finally:
        gate.stop()


def test_an_engine_not_yet_listening_is_503_with_retry_after() -> None:
    with_no_engine = Gate("http://127.0.0.1:9", max_in_flight=3)  # port 9: nothing listens
    try:
        response = httpx.post(
            with_no_engine.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        wait_for(lambda: with_no_engine.in_flight.value == 0)
    finally:
        with_no_engine.stop()


def test_run_gated_returns_the_engines_exit_status() -> None:
    settings = GateSettings(host="127.0.0.1", port=0, api_key=KEY)
    status = run_gated([sys.executable, "-c", "import sys; sys.exit(3)"], {}, settings)
    assert status == 3
