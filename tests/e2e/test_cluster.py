"""End to end on a real cluster (opt-in): install the chart, run the CPU Workspace, chat through it.

Set KAITO_E2E_KUBECONFIG to a kubeconfig (kind, k3s, AKS). Optional: KAITO_E2E_HELM (the helm
binary, default: helm on PATH), KAITO_E2E_HELM_ARGS (extra `helm upgrade` arguments, e.g. image
overrides), KAITO_E2E_TIMEOUT (how long the Workspace may take to become Ready, default 20m).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("KAITO_E2E_KUBECONFIG", "")
KAITO = Path(sys.executable).with_name("kaito")
WORKSPACE = "workspace-smollm2-cpu"
NAMESPACE = "kaito-e2e"
RELEASE_NAMESPACE = "kaito-system"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not KUBECONFIG, reason="set KAITO_E2E_KUBECONFIG to run against a real cluster"),
    pytest.mark.timeout(1800),
]


def run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def kaito(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run(str(KAITO), *args, "--kubeconfig", KUBECONFIG, "--namespace", NAMESPACE, timeout=timeout)


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    helm = os.environ.get("KAITO_E2E_HELM") or shutil.which("helm")
    if not helm:
        pytest.skip("helm is not installed (set KAITO_E2E_HELM to its path)")
    extra = shlex.split(os.environ.get("KAITO_E2E_HELM_ARGS", ""))
    run(
        helm, "upgrade", "--install", "pykaito", str(ROOT / "charts" / "pykaito"),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", "nodeProvisioning.enabled=false", "--wait", "--timeout", "10m", *extra,
    )  # fmt: skip
    ensure_namespace(NAMESPACE)
    yield
    subprocess.run([str(KAITO), "delete", WORKSPACE, "--kubeconfig", KUBECONFIG, "-n", NAMESPACE],
                   capture_output=True, check=False)  # fmt: skip


def ensure_namespace(name: str) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=KUBECONFIG))
    try:
        api.create_namespace({"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def test_cpu_workspace_becomes_ready_and_chats_through_connect(installed: None) -> None:
    applied = kaito("apply", "-f", str(ROOT / "examples" / "workspace-cpu-smollm2.yaml"))
    assert f"workspace.kaito.sh/{WORKSPACE}" in applied.stdout
    timeout = os.environ.get("KAITO_E2E_TIMEOUT", "20m")
    kaito("wait", WORKSPACE, "--for", "ready", "--timeout", timeout, timeout=3600)
    listing = kaito("get", WORKSPACE)
    assert "Ready" in listing.stdout

    import openai

    port = free_port()
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    command = [str(KAITO), "connect", WORKSPACE, "--port", str(port), "-n", NAMESPACE]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        transcript = ""
        while "Ctrl-C" not in transcript and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, (
                f"kaito connect ended early: {transcript} {process.stderr.read() if process.stderr else ''}"
            )
            transcript += line
        assert f"kaito chat --endpoint http://127.0.0.1:{port}" in transcript
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=16
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
