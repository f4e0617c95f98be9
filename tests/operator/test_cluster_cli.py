"""``kaito apply/get/describe/delete/wait/logs/connect`` against the Kubernetes emulator.

The commands run for real: in-process on a worker thread (so the emulator keeps serving on the
test's loop) or, for ``kaito connect``, as a child process stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from pykaito.cli import main as cli_main
from pykaito.cli import output
from tests.netutil import free_port
from tests.operator.cluster import ROOT, apply, call, live
from tests.operator.kube_emulator import WORKSPACES, KubeEmulator

SEED = "workspace-phi-4-mini-h100"
SEED_FILE = ROOT / "examples" / f"{SEED}.yaml"
KAITO = Path(sys.executable).with_name("kaito")
ALL_TRUE = ("NodeClaimReady", "NodesReady", "ResourceReady", "InferenceReady", "WorkspaceSucceeded")


@dataclass
class Result:
    code: int
    out: str
    err: str


Kaito = Callable[..., Awaitable[Result]]


@pytest.fixture
def kaito(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Kaito:
    """Run the real ``kaito`` entry point on a worker thread with a wide terminal."""
    monkeypatch.setattr(output.console, "width", 200)
    monkeypatch.setattr(output.err_console, "width", 200)

    def run_sync(*args: str) -> int:
        sys.argv = ["kaito", *args]
        try:
            cli_main.main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    async def run(*args: str) -> Result:
        argv = sys.argv
        try:
            code = await asyncio.to_thread(run_sync, *args)
        finally:
            sys.argv = argv
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


async def set_status(
    kube: KubeEmulator, name: str, state: str, failing: dict[str, str] | None = None
) -> None:
    conditions = []
    for kind in ALL_TRUE:
        cond = {"type": kind, "status": "True", "reason": kind, "message": "ok"}
        if failing and kind in failing:
            cond = {"type": kind, "status": "False", "reason": failing[kind], "message": f"{kind} broke"}
        conditions.append(cond)
    status = {"state": state, "targetNodeCount": 1, "workerNodes": ["aks-node-1"], "conditions": conditions}
    path = f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{name}/status"
    await call(kube, "PATCH", path, {"status": status})


async def test_apply_get_describe_delete_transcript(kube: KubeEmulator, kaito: Kaito) -> None:
    result = await kaito("apply", "-f", str(SEED_FILE))
    assert (result.code, result.out.strip()) == (0, f"workspace.kaito.sh/{SEED} created"), result.err
    result = await kaito("apply", "-f", str(SEED_FILE))
    assert result.out.strip() == f"workspace.kaito.sh/{SEED} configured"
    stored = live(kube, WORKSPACES, "default", SEED)
    assert stored is not None and stored["inference"]["preset"]["name"] == "phi-4-mini-instruct"

    result = await kaito("get")
    assert result.code == 0, result.err
    header, line = result.out.strip().splitlines()
    columns = "NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACESUCCEEDED TARGETNODECOUNT STATE AGE"
    assert header.split() == columns.split()
    assert line.split()[:2] == [SEED, "Standard_NC40ads_H100_v5"]

    await set_status(
        kube, SEED, "Failed", failing={"InferenceReady": "ContainerOOMKilled", "WorkspaceSucceeded": "x"}
    )
    event = {
        "metadata": {"name": "ev1", "namespace": "default"},
        "involvedObject": {"kind": "Workspace", "name": SEED, "namespace": "default"},
        "reason": "ContainerOOMKilled",
        "message": "container inference of pod ws-0 ran out of memory (OOMKilled)",
        "type": "Warning",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    await call(kube, "POST", "/api/v1/namespaces/default/events", event)
    result = await kaito("get", SEED)
    assert result.out.strip().splitlines()[1].split()[:7] == [
        SEED, "Standard_NC40ads_H100_v5", "True", "False", "False", "1", "Failed",
    ]  # fmt: skip
    result = await kaito("get", SEED, "-o", "json")
    assert json.loads(result.out)["status"]["state"] == "Failed"

    result = await kaito("describe", SEED)
    assert result.code == 0, result.err
    out = result.out
    assert "phi-4-mini-instruct" in out and "aks-node-1" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["InferenceReady"][:3] == ["InferenceReady", "False", "ContainerOOMKilled"]
    assert rows["ResourceReady"][:2] == ["ResourceReady", "True"]
    assert rows["Warning"][:2] == ["Warning", "ContainerOOMKilled"] and "ran out of memory" in out
    assert "Plan" in out and "Standard_NC40ads_H100_v5" in out

    result = await kaito("delete", SEED)
    assert (result.code, result.out.strip()) == (0, f'workspace.kaito.sh "{SEED}" deleted')
    result = await kaito("get", SEED)
    assert result.code == 2
    assert (
        result.err.count("\n") == 1 and f"workspace '{SEED}' not found in namespace 'default'" in result.err
    )


async def test_wait_reports_progress_and_times_out_with_the_reason(kube: KubeEmulator, kaito: Kaito) -> None:
    await kaito("apply", "-f", str(SEED_FILE))
    await set_status(kube, SEED, "Pending", failing={"NodeClaimReady": "NodeClaimNotReady"})
    result = await kaito("wait", SEED, "--for", "ready", "--timeout", "1s")
    assert result.code == 2
    assert "timed out after 1s" in result.err and "NodeClaimReady is False (NodeClaimNotReady" in result.err

    async def ready_soon() -> None:
        await asyncio.sleep(0.5)
        await set_status(kube, SEED, "Ready")

    task = asyncio.create_task(ready_soon())
    result = await kaito("wait", SEED, "--timeout", "20s")
    await task
    assert (result.code, result.out.strip()) == (0, f"workspace {SEED} is ready")


async def test_logs_prints_the_inference_pod_log(kube: KubeEmulator, kaito: Kaito) -> None:
    await kaito("apply", "-f", str(SEED_FILE))
    pod = {
        "metadata": {"name": f"{SEED}-0", "labels": {"kaito.sh/workspace": SEED}},
        "spec": {"containers": []},
    }
    await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)
    kube.pod_logs[("default", f"{SEED}-0")] = "INFO loading model\nINFO ready on :5000\n"
    result = await kaito("logs", SEED)
    assert (result.code, result.out) == (0, "INFO loading model\nINFO ready on :5000\n")
    result = await kaito("logs", SEED, "--follow")
    assert (result.code, result.out) == (0, "INFO loading model\nINFO ready on :5000\n")
    assert any(r.params.get("follow") == "true" for r in kube._requests)


async def test_unreachable_cluster_is_one_line(
    kaito: Kaito, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.operator.conftest import write_kubeconfig

    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")))
    result = await kaito("get")
    assert result.code == 2
    assert "cannot reach the Kubernetes API server at http://127.0.0.1" in result.err
    assert "Traceback" not in result.err


async def test_connect_refuses_a_workspace_that_is_not_ready(kube: KubeEmulator, kaito: Kaito) -> None:
    await kaito("apply", "-f", str(SEED_FILE))
    await set_status(kube, SEED, "Failed", failing={"InferenceReady": "ContainerOOMKilled"})
    result = await kaito("connect", SEED, "--port", str(free_port()))
    assert result.code == 2
    assert f"workspace '{SEED}' is not ready: InferenceReady is False (ContainerOOMKilled" in result.err
    result = await kaito("connect", "nope")
    assert result.code == 2 and "workspace 'nope' not found" in result.err


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def runtime() -> Any:
    """The real inference server with the embedded model, playing the pod's port 5000."""
    from pykaito.catalog.embedded import embedded_gguf_path
    from pykaito.runtime.serve import llamacpp_engine, start_in_thread
    from pykaito.runtime.settings import ServerSettings

    handle = start_in_thread(llamacpp_engine(embedded_gguf_path(), parallel=2), ServerSettings(port=0))
    yield handle
    handle.stop()


@pytest.fixture
async def ready_seed(kube: KubeEmulator, runtime: Any, kaito: Kaito) -> AsyncIterator[str]:
    await apply(kube, {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": SEED},
                       "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
                       "inference": {"preset": {"name": "phi-4-mini-instruct"}}})  # fmt: skip
    await set_status(kube, SEED, "Ready")
    await start_pod(kube, SEED, runtime.port)
    yield SEED


async def start_pod(kube: KubeEmulator, workspace: str, port: int) -> None:
    """A Ready inference pod whose port 5000 is the local runtime's port."""
    pod = {"metadata": {"name": f"{workspace}-0", "labels": {"kaito.sh/workspace": workspace}}}
    await call(kube, "POST", "/api/v1/namespaces/default/pods", pod)
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    await call(kube, "PATCH", f"/api/v1/namespaces/default/pods/{workspace}-0/status", {"status": status})
    kube.port_forwards[("default", f"{workspace}-0")] = port


async def test_connect_tunnels_to_the_pod_and_cleans_up_on_sigterm(
    kube: KubeEmulator, ready_seed: str, runtime: Any
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(KAITO), "connect", ready_seed, "--port", str(port), "--save", "tunnel",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("Ctrl-C" in line for line in lines):
                line = (await process.stdout.readline()).decode()
                assert line, f"kaito connect ended early: {lines} {(await process.stderr.read()).decode()}"
                lines.append(line)
        transcript = "".join(lines)
        assert f"connected to workspace {ready_seed}" in transcript
        assert f"kaito chat --endpoint http://127.0.0.1:{port}" in transcript
        assert f"kaito ui --endpoint http://127.0.0.1:{port}" in transcript
        assert "saved as connection tunnel" in transcript
        from pykaito.apps.connections import ConnectionStore

        saved = ConnectionStore().get("tunnel")
        assert (saved.kind, saved.workspace, saved.namespace) == ("workspace", ready_seed, "default")
        assert saved.url == f"http://127.0.0.1:{port}"

        def chat() -> Any:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            model = client.models.list().data[0].id
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
            )

        reply = await asyncio.to_thread(chat)
        assert reply.choices[0].finish_reason in {"stop", "length"}
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        assert any(r.subresource == "portforward" for r in kube._requests)

        # the pod restarts (deleted, then back under a new uid): the next connection finds it again
        await call(kube, "DELETE", f"/api/v1/namespaces/default/pods/{ready_seed}-0")
        with pytest.raises(openai.APIConnectionError):
            await asyncio.to_thread(chat)  # no pod: the tunnel closes the connection
        await start_pod(kube, ready_seed, runtime.port)
        again = await asyncio.to_thread(chat)
        assert again.choices[0].finish_reason in {"stop", "length"}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.wait()
    assert process.returncode == 0
    rest = (await process.stdout.read()).decode()
    assert "tunnel closed" in rest
    assert not listening(port)
