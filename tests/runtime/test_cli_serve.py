"""``kaito serve`` and ``pykaito-runtime llamacpp`` run as real processes and answer over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port

pytestmark = pytest.mark.slow

KAITO = [sys.executable, "-m", "pykaito.cli.main"]
RUNTIME = [sys.executable, "-m", "pykaito.runtime.entry"]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return self.process.wait(20)


@contextmanager
def served(
    command: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """Run a server process until it answers /health with 200; kill it afterwards if still running."""
    with (
        log.open("wb") as sink,
        subprocess.Popen(
            list(command), stdout=subprocess.DEVNULL, stderr=sink, env={**os.environ, **(env or {})}
        ) as process,
    ):
        server = Served(process, f"http://127.0.0.1:{port}", log)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, server.stderr()
                try:
                    if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not become healthy"
                time.sleep(0.1)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def kaito_serve(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    command = [*KAITO, "serve", "--port", str(port), "--parallel", "2", "--threads", "1"]
    with served(command, port, tmp_path / "serve.log", {"KAITO_API_KEY": ""}) as server:
        yield server


def test_kaito_serve_answers_chat_and_stops_on_ctrl_c(kaito_serve: Served) -> None:
    url = kaito_serve.url
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "smollm2-135m-instruct"
    response = httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert kaito_serve.stop(signal.SIGINT) in (0, 130)
    stderr = kaito_serve.stderr()
    assert "loading smollm2-135m-instruct from " in stderr
    assert f"ready: {url}/v1 serves smollm2-135m-instruct" in stderr
    assert "Traceback" not in stderr


def test_kaito_serve_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = subprocess.run([*KAITO, "serve", "--port", port], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: port {port} on 127.0.0.1 is already in use: stop the program using it or pass another --port"
    )


def test_kaito_serve_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    result = subprocess.run(
        [*KAITO, "serve", "--model", str(missing), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: model file {missing} does not exist")


def test_runtime_entry_serves_the_embedded_model_with_a_key(tmp_path: Path) -> None:
    port = free_port()
    command = [
        *RUNTIME, "llamacpp", "--model", "embedded", "--host", "127.0.0.1", "--port", str(port),
        "--parallel", "2", "--threads", "1", "--served-model-name", "tiny",
    ]  # fmt: skip
    with served(command, port, tmp_path / "runtime.log", {"KAITO_API_KEY": "k3y"}) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        models = httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer k3y"}).json()
        assert models["data"][0]["id"] == "tiny"
        server.stop(signal.SIGTERM)
        stderr = server.stderr()
        assert "Traceback" not in stderr
        assert "loading tiny from" in stderr
        assert "tiny is ready" in stderr


def test_token_ids_outside_the_vocabulary_do_not_kill_the_server(tmp_path: Path) -> None:
    port = free_port()
    command = [
        *RUNTIME, "llamacpp", "--model", "embedded", "--host", "127.0.0.1", "--port", str(port),
        "--parallel", "1", "--threads", "1",
    ]  # fmt: skip
    with served(command, port, tmp_path / "runtime.log") as server:
        for path, body in (
            ("/detokenize", {"tokens": [10**6]}),
            ("/v1/completions", {"prompt": [1, 2**31 - 1], "max_tokens": 2}),
        ):
            try:
                response = httpx.post(server.url + path, json=body, timeout=30)
            except httpx.TransportError as exc:
                raise AssertionError(f"the server died on {path} {body}") from exc
            assert response.status_code == 400, response.text
        assert httpx.get(server.url + "/health").status_code == 200


def test_engine_names_the_embedded_model_by_its_preset(tmp_path: Path) -> None:
    """Every entry point serves the embedded GGUF as the preset clients know; other files by name."""
    from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
    from pykaito.runtime.serve import llamacpp_engine

    assert llamacpp_engine(embedded_gguf_path()).model_name == EMBEDDED_PRESET
    other = tmp_path / "my-model.gguf"
    other.write_bytes(embedded_gguf_path().read_bytes()[:16])
    assert llamacpp_engine(other).model_name == "my-model"
    assert llamacpp_engine(embedded_gguf_path(), served_model_name="mine").model_name == "mine"


@pytest.mark.parametrize(
    ("argv", "cached"),
    [
        pytest.param(["kaito", "serve"], True, id="kaito-serve"),
        pytest.param(["kaito", "serve", "--no-prefix-cache"], False, id="kaito-serve-off"),
        pytest.param(["pykaito-runtime", "llamacpp", "--model", "embedded"], True, id="runtime"),
        pytest.param(
            ["pykaito-runtime", "llamacpp", "--model", "embedded", "--no-prefix-cache"],
            False,
            id="runtime-off",
        ),
    ],
)
def test_prefix_caching_can_be_turned_off(
    argv: list[str], cached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both entry points hand the flag to the engine (the server itself is not started here)."""
    from pykaito.cli import main as cli_main
    from pykaito.runtime import entry
    from pykaito.runtime import serve as serve_module
    from pykaito.runtime.engines.llamacpp import LlamaCppEngine

    engines: list[LlamaCppEngine] = []
    monkeypatch.setattr(serve_module, "serve", lambda engine, *_, **__: engines.append(engine))
    monkeypatch.setattr(sys, "argv", argv)
    if argv[0] == "kaito":
        with pytest.raises(SystemExit) as exited:
            cli_main.main()
        assert exited.value.code in (0, None)
    else:
        entry.main(argv[1:])
    [engine] = engines
    assert engine.settings.prefix_cache is cached
