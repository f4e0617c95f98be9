"""`kaito up`: the local runtime and the web app in one command, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port

KAITO = [sys.executable, "-m", "pykaito.cli.main"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_up_serves_api_and_web_app_then_stops_on_sigterm() -> None:
    api_port, ui_port = free_port(), free_port()
    # a narrow terminal: the commands in the banner stay whole on one line, whatever the paths' length
    env = {**os.environ, "COLUMNS": "40"}
    process = subprocess.Popen(
        [*KAITO, "up", "--port", str(api_port), "--ui-port", str(ui_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    rest = ""
    with process:  # closes the pipe whatever happens
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 180
            while not any("press Ctrl-C to stop" in line for line in lines):
                line = process.stdout.readline()
                assert line or process.poll() is None, "".join(lines)
                lines.append(line)
                assert time.monotonic() < deadline, "".join(lines)
            banner = "".join(lines)
            assert f"http://127.0.0.1:{api_port}/v1" in banner
            assert f"http://127.0.0.1:{ui_port}" in banner
            assert f"kaito chat --endpoint http://127.0.0.1:{api_port}" in banner

            models = httpx.get(f"http://127.0.0.1:{api_port}/v1/models", timeout=10).json()
            ids = [m["id"] for m in models["data"]]
            assert ids == ["smollm2-135m-instruct"], "the preset name clients use"
            assert httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=10).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=10).status_code == 200
            page = httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10)
            assert page.status_code == 200 and '<div id="root">' in page.text

            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    assert port_free(api_port) and port_free(ui_port)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--model", "missing.gguf"],
            "--model missing.gguf: no such file; give the path of a .gguf model or a pulled model",
            id="missing-model",
        ),
        pytest.param(
            ["--port", "{busy}"],
            "port {busy} is already in use: stop what runs there or pick another with --port {next}"
            " (make run PORT={next})",
            id="busy-port",
        ),
    ],
)
def test_up_refuses_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [a.format(busy=port) for a in args]
        result = subprocess.run(
            [*KAITO, "up", *argv], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message.format(busy=port, next=port + 1)}"
    assert result.stdout == ""


def test_make_run_takes_the_ports() -> None:
    root = Path(__file__).parents[2]
    shown = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "run", "PORT=9090", "UI_PORT=9501"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ".venv/bin/kaito up --port 9090 --ui-port 9501" in shown.stdout
