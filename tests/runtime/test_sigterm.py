"""SIGTERM ends the streams in flight with finish reason "abort" and [DONE], then the process exits.

``kaito serve``, ``pykaito-runtime llamacpp`` and ``kaito up --no-ui`` run as real processes; a
client holds a long stream open when the signal arrives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PYTHON = [sys.executable, "-m"]
ENDS_WITHIN_S = 5.0  # the server ends streams at once; the bound leaves room for a busy machine


class Stream:
    """A chat stream read on a thread: its SSE data lines and when the last one arrived."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.data: list[str] = []
        self.first = threading.Event()
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Tell a very long story about the sea."}],
            "max_tokens": 1900,
            "stream": True,
        }
        try:
            with httpx.stream(
                "POST", self.url + "/v1/chat/completions", json=body, headers=self.headers, timeout=60
            ) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line[len("data: ") :])
                        if '"content":"' in line and '"content":""' not in line:
                            self.first.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first.set()


def wait_healthy(process: subprocess.Popen[bytes], url: str, output: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, output.read_text(errors="replace")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become healthy"
        time.sleep(0.1)


def stream_then_sigterm(
    command: list[str], port: int, tmp_path: Path, env: dict[str, str]
) -> tuple[int, str]:
    """Start ``command``, open a long stream, send SIGTERM, check how the stream ended.

    Returns the exit status and the process's output.
    """
    url = f"http://127.0.0.1:{port}"
    output = tmp_path / "server.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            wait_healthy(process, url, output)
            headers = {"authorization": f"Bearer {env['KAITO_API_KEY']}"} if env.get("KAITO_API_KEY") else {}
            stream = Stream(url, headers)
            assert stream.first.wait(60), "no token streamed"
            assert stream.error is None and stream.ended_at is None, stream.error
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            stream.thread.join(30)
            assert stream.ended_at is not None, "the stream did not end"
            assert stream.error is None, stream.error
            assert stream.ended_at - signalled < ENDS_WITHIN_S, (
                f"ended {stream.ended_at - signalled:.1f} s after"
            )
            assert stream.data[-1] == "[DONE]"
            last = json.loads(stream.data[-2])
            assert last["choices"][0]["finish_reason"] == "abort", stream.data[-3:]
            assert len(stream.data) > 3, "tokens were streamed before the signal"
            status = process.wait(30)
            assert time.monotonic() - signalled < 10, "the process took uvicorn's whole graceful timeout"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = output.read_text(errors="replace")
    assert "Traceback" not in text and "CancelledError" not in text, text
    return status, text


def test_kaito_serve_ends_streams_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [*PYTHON, "pykaito.cli.main", "serve", "--port", str(port), "--parallel", "2", "--threads", "1"]
    status, text = stream_then_sigterm(command, port, tmp_path, {"KAITO_API_KEY": ""})
    assert status == -signal.SIGTERM, text  # uvicorn re-raises the signal: shell status 143


def test_runtime_entry_ends_streams_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [
        *PYTHON, "pykaito.runtime.entry", "llamacpp", "--model", "embedded", "--host", "127.0.0.1",
        "--port", str(port), "--parallel", "2", "--threads", "1",
    ]  # fmt: skip
    status, text = stream_then_sigterm(command, port, tmp_path, {"KAITO_API_KEY": "k3y"})
    assert status == -signal.SIGTERM, text


def test_kaito_up_no_ui_ends_streams_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [*PYTHON, "pykaito.cli.main", "up", "--no-ui", "--port", str(port)]
    status, text = stream_then_sigterm(command, port, tmp_path, {"KAITO_HOME": str(tmp_path / "home")})
    assert status == 0, text
    assert "stopped" in text
    log = (tmp_path / "home" / "runtime.log").read_text(errors="replace")
    assert "Traceback" not in log and "finish=abort" in log, log
