"""What the browser tests share: `kaito ui` in a child process and headless Chromium."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from playwright.sync_api import Browser, sync_playwright

from tests.netutil import free_port

# Debian's Chromium as root, on a machine whose network is closed: no sandbox, no background traffic
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_streamlit(process: subprocess.Popen[str], url: str, what: str, timeout: float = 90) -> None:
    """Until the Streamlit server at ``url`` answers its health check; fails if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.3)


@contextmanager
def kaito_ui(endpoint: str, log: list[str] | None = None) -> Iterator[str]:
    """`kaito ui` on a free port (its KAITO_HOME is the test's); it must stop cleanly afterwards.

    What it printed is appended to ``log`` once it has stopped.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        [sys.executable, "-m", "pykaito.cli.main", "ui", "--endpoint", endpoint, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            wait_for_streamlit(process, url, "kaito ui")
            yield url
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
            if log is not None:
                log.append(output)
    assert process.returncode == 0, output
    assert f"web app: {url}" in output
    assert "stopped" in output
