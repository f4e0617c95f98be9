"""Slow and many clients over the wire: request-head and body deadlines, the connection cap, HEAD /health."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from pykaito.runtime.serve import ServerHandle, start_in_thread
from pykaito.runtime.settings import ServerSettings
from tests.runtime.fake_engine import FakeEngine

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    settings = ServerSettings(
        port=0, header_timeout_s=HEAD_TIMEOUT, body_timeout_s=BODY_TIMEOUT, max_connections=6
    )
    with start_in_thread(FakeEngine(), settings) as handle:
        yield handle


def connect(server: ServerHandle) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=30)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes the connection within ``seconds``, and what it sent before."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_a_request_head_sent_byte_by_byte_is_cut_off(server: ServerHandle) -> None:
    sock = connect(server)
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400
    started = time.monotonic()
    cut = False
    with sock:
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if time.monotonic() - started > HEAD_TIMEOUT + 30:
                break
            time.sleep(0.05)
        if not cut:
            cut, _ = closed_within(sock, 30)
    assert cut, "a slowloris connection was held open"
    assert time.monotonic() - started < HEAD_TIMEOUT + 30
    assert httpx.get(server.url + "/health").status_code == 200  # the server still answers


def test_an_idle_connection_is_closed_and_a_keep_alive_one_gets_the_same_deadline(
    server: ServerHandle,
) -> None:
    with connect(server) as sock:
        cut, _ = closed_within(sock, HEAD_TIMEOUT + 30)
        assert cut
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # a second request, never finished
        cut, received = closed_within(sock, HEAD_TIMEOUT + 30)
        assert cut
        assert received.startswith(b"HTTP/1.1 200")


def test_a_slow_body_gets_408(server: ServerHandle) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        cut, received = closed_within(sock, BODY_TIMEOUT + 30)
        assert cut
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"did not arrive within" in received


def test_a_request_in_progress_is_not_cut_by_the_head_deadline() -> None:
    fake = FakeEngine(token_delay=0.25)  # about 3 s for the whole reply
    settings = ServerSettings(port=0, header_timeout_s=HEAD_TIMEOUT)
    with start_in_thread(fake, settings) as server:
        body = {"messages": [{"role": "user", "content": "x"}]}
        response = httpx.post(server.base_url + "/chat/completions", json=body, timeout=60)
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "stop"


def test_connections_over_the_cap_are_refused_with_503_and_the_server_recovers() -> None:
    settings = ServerSettings(port=0, max_connections=4, header_timeout_s=120)
    with start_in_thread(FakeEngine(), settings) as server:
        idle = [connect(server) for _ in range(4)]
        try:
            deadline = time.monotonic() + 30
            while httpx.get(server.url + "/health", timeout=30).status_code != 503:
                assert time.monotonic() < deadline, "a connection over the cap was served"
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/health", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover after the connections closed"
            time.sleep(0.05)


def test_head_health_over_the_wire(server: ServerHandle) -> None:
    response = httpx.head(server.url + "/health")
    assert response.status_code == 200
    assert response.content == b""
