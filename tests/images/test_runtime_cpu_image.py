"""The CPU runtime image, run as the operator's pod for the CPU preset runs it.

The container gets what pykaito.manifests renders for examples/workspace-cpu-smollm2.yaml: the
image, command, arguments, environment, user, read-only root and emptyDir volumes. Only the
listening address and port change (127.0.0.1 and a free port: the container shares the host's
network). It must answer on the model it ships, and stop on SIGTERM within the pod's grace period.
While it serves, the Workspace's benchmark Job (the same image running `kaito bench`) measures it as
the operator renders the Job, with fewer requests: the image has no matplotlib, so its HTML report
has tables only and says how to get the plots.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pykaito.api.types import Workspace
from pykaito.manifests import render
from pykaito.manifests.benchmark import TERMINATION_LOG, BenchmarkSettings, render_benchmark_job
from pykaito.planner import plan
from tests.images import podman
from tests.netutil import free_port

EXAMPLE = podman.ROOT / "examples" / "workspace-cpu-smollm2.yaml"
K8S_DEFAULT_GRACE_S = 30  # terminationGracePeriodSeconds when a pod spec does not set it


def workspace() -> Workspace:
    return Workspace.model_validate(yaml.safe_load(EXAMPLE.read_text()))


def cpu_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    cpu = workspace()
    (statefulset,) = [o for o in render(cpu, plan(cpu)) if o["kind"] == "StatefulSet"]
    spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def on_port(args: list[str], port: int) -> list[str]:
    """The rendered arguments with ``--host`` and ``--port`` replaced (each must be there)."""
    result = list(args)
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        assert flag in result, f"the rendered arguments have no {flag}: {args}"
        result[result.index(flag) + 1] = value
    return result


async def ready(http: httpx.AsyncClient, url: str, process: Any) -> bool:
    if process.returncode is not None:
        raise AssertionError(f"the container exited with {process.returncode} before it was ready")
    try:
        return (await http.get(f"{url}/health")).status_code == 200
    except httpx.TransportError:
        return False


async def benchmark_job(image: str, url: str, tmp_path: Path) -> None:
    """The Workspace's benchmark Job container against ``url``: a short sweep (concurrency 1, two
    requests) and an HTML report on top; its status figures land where the operator reads them."""
    settings = BenchmarkSettings(
        max_concurrency=1, step_requests=2, input_tokens=16, output_tokens=4, reference_concurrency=1
    )
    job = render_benchmark_job(workspace(), settings=settings)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image and container["terminationMessagePath"] == TERMINATION_LOG
    command = list(container["command"])
    service = next(i for i, arg in enumerate(command) if arg.startswith("http://"))
    command[service] = url
    status = tmp_path / "termination-log"
    status.write_text("")
    status.chmod(0o666)
    out = tmp_path / "bench"
    out.mkdir()
    out.chmod(0o777)
    name = podman.container_name("benchmark")
    options = ["run", "--rm", "--name", name, "--init", "--network", "host", "--pull", "never"]
    options += [arg for item in container["env"] for arg in ("--env", f"{item['name']}={item['value']}")]
    options += ["--volume", f"{status}:{TERMINATION_LOG}", "--volume", f"{out}:/out"]
    options += ["--entrypoint", command[0], image, *command[1:], "--html", "/out/report.html"]
    process = await asyncio.create_subprocess_exec(
        *podman.podman(*options), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(300):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            await podman.remove(name)
    said = " ".join(stderr.decode().split())
    assert process.returncode == 0, f"the benchmark Job failed:\n{stdout.decode()}\n{stderr.decode()}"
    figures = json.loads(status.read_text())
    assert figures["referenceConcurrency"] == 1 and figures["peakOutputTokensPerMinute"] > 0, figures
    page = (out / "report.html").read_text()
    assert "<table>" in page and "concurrency 1" in page and "<svg" not in page
    assert "id='no-plots'" in page and "pip install 'pykaito[plots]'" in page
    assert "without plots" in said and "pip install 'pykaito[plots]'" in said, said


async def wait_for(check: Any, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready within {timeout} s")
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_cpu_runtime_image_serves_the_preset_and_stops_on_sigterm(
    images: dict[str, str], tmp_path: Path
) -> None:
    spec, container = cpu_pod()
    assert container["image"] == images["runtime-cpu"]  # what the operator deploys is what was built
    context = {**spec["securityContext"], **container["securityContext"]}
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    grace = spec.get("terminationGracePeriodSeconds", K8S_DEFAULT_GRACE_S)
    model = container["args"][container["args"].index("--served-model-name") + 1]

    port = free_port()
    name = podman.container_name("runtime")
    options = podman.run_args(spec, container, name=name, args=on_port(container["args"], port))
    log = tmp_path / "runtime.log"
    url = f"http://127.0.0.1:{port}"
    try:
        async with (
            podman.running(options, log) as process,
            httpx.AsyncClient(timeout=120.0) as http,
        ):
            await wait_for(lambda: ready(http, url, process), timeout=300)

            body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
            answer = await http.post(f"{url}/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            data = answer.json()
            assert data["model"] == model
            assert data["choices"][0]["message"]["role"] == "assistant"
            assert data["usage"]["completion_tokens"] >= 1

            chunks: list[dict[str, Any]] = []
            async with http.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as s:
                assert s.status_code == 200
                assert s.headers["content-type"].startswith("text/event-stream")
                async for line in s.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunks.append(json.loads(line.removeprefix("data: ")))
                    if line == "data: [DONE]":
                        break
            assert chunks, "the stream sent no chunks"
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            assert text, chunks
            assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)

            metrics = (await http.get(f"{url}/metrics")).text
            assert f'vllm:request_success_total{{finished_reason="length",model_name="{model}"}}' in metrics

            await benchmark_job(images["runtime-cpu"], url, tmp_path)

            # SIGTERM, as the kubelet sends it: the server ends by itself within the grace period
            started = time.monotonic()
            await podman.signal_container(name, "TERM")
            async with asyncio.timeout(grace):
                await process.wait()
            stopped_in = time.monotonic() - started
            # uvicorn shuts down cleanly, then ends by the signal it caught (128 + 15)
            assert process.returncode in (0, 143), f"exit {process.returncode} after SIGTERM"
            assert "Application shutdown complete" in log.read_text()
            assert stopped_in < grace
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- container log ---\n{log.read_text()[-3000:]}") from exc
