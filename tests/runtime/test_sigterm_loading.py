"""SIGTERM while the model is still loading: requests get a clear 503, the process stops cleanly.

``kaito serve`` and ``kaito up --no-ui`` run as real processes. A client sends chat requests
from the moment the port opens; the signal goes as soon as one is answered 503 "loading". An
attempt where loading won the race (the model became ready before the signal) is tried again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GRACE_S = 10.0  # the process must be gone well within a pod's termination grace period
ATTEMPTS = 4


@dataclass
class Requests:
    """Chat requests sent one after another on a thread, streamed and not, until told to stop."""

    url: str
    answers: list[tuple[int, str]] = field(default_factory=list)
    refused_after_stop: int = 0
    first_503: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, stream: bool) -> None:
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8,
            "stream": stream,
        }
        while not self.done.is_set():
            try:
                with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=30) as r:
                    self.answers.append((r.status_code, r.read().decode()))
                    if r.status_code == 503:
                        self.first_503.set()
            except httpx.TransportError:
                # nothing listens yet, or no longer: a connection the server never took
                if self.first_503.is_set():
                    self.refused_after_stop += 1
                time.sleep(0.01)


def sigterm_while_loading(
    command: list[str], port: int, tmp_path: Path, env: dict[str, str]
) -> tuple[int, str, float]:
    """Start, wait for a 503 "loading", SIGTERM; returns exit status, output, seconds to exit."""
    output = tmp_path / "server.log"
    requests = Requests(f"http://127.0.0.1:{port}")
    threads = [threading.Thread(target=requests.run, args=(s,), daemon=True) for s in (True, False)]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            for thread in threads:
                thread.start()
            assert requests.first_503.wait(120), output.read_text(errors="replace")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status = process.wait(60)
            took = time.monotonic() - signalled
        finally:
            requests.done.set()
            if process.poll() is None:
                process.kill()
                process.wait()
            for thread in threads:
                thread.join(30)
    text = output.read_text(errors="replace")
    assert "Traceback" not in text and "CancelledError" not in text, text
    # every answer was whole: a 503 that says the model is loading, or (loading won) a reply
    for code, body in requests.answers:
        if code == 503:
            error = json.loads(body)["error"]
            assert error["code"] == "model_loading" and "not ready yet" in error["message"], body
        else:
            assert code == 200 and ("[DONE]" in body or '"finish_reason"' in body), body
    return status, text, took


def test_kaito_serve_stops_cleanly_while_loading(tmp_path: Path) -> None:
    for _ in range(ATTEMPTS):
        port = free_port()
        command = [sys.executable, "-m", "pykaito.cli.main", "serve", "--port", str(port), "--threads", "1"]
        status, text, took = sigterm_while_loading(command, port, tmp_path, {"KAITO_API_KEY": ""})
        assert status == -signal.SIGTERM, text  # uvicorn re-raises the signal: shell status 143
        assert took < GRACE_S, f"took {took:.1f} s to exit"
        if "ready:" not in text:
            return  # the signal came while the model was loading
    pytest.fail(f"the model loaded before the signal in all {ATTEMPTS} attempts")


def test_kaito_up_stops_cleanly_while_loading(tmp_path: Path) -> None:
    for attempt in range(ATTEMPTS):
        port = free_port()
        home = tmp_path / f"home-{attempt}"
        command = [sys.executable, "-m", "pykaito.cli.main", "up", "--no-ui", "--port", str(port)]
        status, text, took = sigterm_while_loading(command, port, tmp_path, {"KAITO_HOME": str(home)})
        assert status == 0, text
        assert took < GRACE_S, f"took {took:.1f} s to exit"
        assert "stopping…" in text and "stopped" in text, text
        log = (home / "runtime.log").read_text(errors="replace")
        assert "Traceback" not in log and "CancelledError" not in log, log
        # the server was stopped in order, not dropped with the process
        assert "Application shutdown complete" in log and "Finished server process" in log, log
        if " is ready (" not in log:
            return  # the signal came while the model was loading
    pytest.fail(f"the model loaded before the signal in all {ATTEMPTS} attempts")
