"""`kaito serve NAME` serves a pulled model: a real server process answers the official OpenAI client."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.models.conftest import KAITO, Kaito
from tests.models.hubstub import Hub
from tests.netutil import free_port

pytestmark = pytest.mark.slow

NAME = "acme/tiny-GGUF:tiny-Q4_K_M.gguf"


def wait_healthy(process: subprocess.Popen[str], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the server did not become healthy: {log.read_text()}"
        time.sleep(0.1)


def test_serve_pull_then_chat(
    hub: Hub, gguf: Path, env: dict[str, str], tmp_path: Path, kaito: Kaito
) -> None:
    hub.add("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": gguf})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [*KAITO, "serve", NAME, "--pull", "--port", str(port), "--threads", "1", "--parallel", "2"]
    with log.open("w") as sink, subprocess.Popen(command, env=env, stderr=sink, text=True) as process:
        try:
            wait_healthy(process, url, log)
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
            assert [m.id for m in client.models.list().data] == [NAME]
            reply = client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
            )
            assert reply.choices[0].message.content
            assert reply.choices[0].finish_reason in ("stop", "length")
            assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)
    stderr = log.read_text()
    assert f"pulled {NAME}: 94 MiB Q4_1" in stderr
    assert f"{NAME}: 2 parallel slots x 4096 tokens (`kaito plan {NAME} --cpu` explains)" in stderr
    assert "Traceback" not in stderr
    (row,) = json.loads(kaito("models", "-o", "json").out)
    assert row["name"] == NAME and row["last_used"]


def test_serve_a_model_not_pulled_says_what_to_run(hub: Hub, kaito: Kaito) -> None:
    result = kaito("serve", "acme/absent-GGUF", "--port", str(free_port()))
    assert result.code == 2
    assert result.err.strip() == (
        "error: no pulled model called 'acme/absent-GGUF': run `kaito pull acme/absent-GGUF` first, "
        "or `kaito models` to list what is pulled"
    )


def test_chat_with_a_pulled_model_serves_it_for_the_chat(hub: Hub, gguf: Path, env: dict[str, str]) -> None:
    hub.add("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": gguf})
    env = {**env, "KAITO_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    result = subprocess.run(
        [*KAITO, "chat", "--model", NAME, "--pull", "--max-tokens", "8"],
        input="Say hi\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), result.stderr
    assert f"pulled {NAME}" in result.stderr and "Traceback" not in result.stderr
