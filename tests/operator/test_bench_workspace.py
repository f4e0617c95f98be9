"""`kaito bench WORKSPACE`: through the same tunnel as `kaito connect`, with the plan's decode ceiling."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.bench.conftest import standin
from tests.operator.cluster import apply, call
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_cluster_cli import SEED, set_status, start_pod

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def kaito(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pykaito.cli.main", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 150)
    return process.returncode or 0, out.decode(), err.decode()


async def test_bench_a_workspace_by_name(kube: KubeEmulator, tmp_path: Path) -> None:
    await apply(kube, {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": SEED},
                       "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
                       "inference": {"preset": {"name": "phi-4-mini-instruct"}}})  # fmt: skip
    await set_status(kube, SEED, "Ready")
    saved = tmp_path / "run.json"
    with standin(ttft_s=0.02, tpot_s=0.005) as url:
        await start_pod(kube, SEED, int(url.rsplit(":", 1)[1]))
        code, out, err = await kaito("bench", SEED, "-c", "1,2", "-n", "4", "--input-tokens", "10",
                                     "--output-tokens", "8", "--save", str(saved))  # fmt: skip
    assert code == 0, err
    data = json.loads(saved.read_text())
    assert data["meta"]["workspace"] == SEED
    ceiling = data["meta"]["plan_decode_tokens_per_s"]
    assert ceiling > 100  # phi-4-mini on an H100: the bandwidth-bound single-stream ceiling
    assert [s["figures"]["completed"] for s in data["steps"]] == [4, 4]
    assert "the plan's decode ceiling is" in out and f"{ceiling:.0f} tok/s" in out
    assert any(r.subresource == "portforward" for r in kube._requests)


async def test_bench_refuses_a_workspace_that_is_not_ready(kube: KubeEmulator) -> None:
    await apply(kube, {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": SEED},
                       "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
                       "inference": {"preset": {"name": "phi-4-mini-instruct"}}})  # fmt: skip
    await set_status(kube, SEED, "NotReady", failing={"InferenceReady": "PodsNotReady"})
    code, _, err = await kaito("bench", SEED, "-n", "1")
    assert code == 2
    assert f"workspace '{SEED}' is not ready: InferenceReady is False" in err and "Traceback" not in err
    code, _, err = await kaito("bench", "nope", "-n", "1")
    assert code == 2 and "workspace 'nope' not found" in err


SET = "phi-4-mini"
SET_PATH = "/apis/kaito.sh/v1beta1/namespaces/default/inferencesets"
TEMPLATE = {
    "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}


async def _inference_set(kube: KubeEmulator, replicas: int) -> None:
    body = {"apiVersion": "kaito.sh/v1beta1", "kind": "InferenceSet", "metadata": {"name": SET}}
    await call(kube, "POST", SET_PATH, {**body, "spec": {"replicas": replicas, "template": TEMPLATE}})


async def _replica(kube: KubeEmulator, index: int, ready: bool, port: int) -> str:
    name = f"{SET}-{index}"
    labels = {"inferenceset.kaito.sh/created-by": SET}
    body = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "labels": labels},
    }
    await apply(kube, {**body, **TEMPLATE})
    if ready:
        await set_status(kube, name, "Ready")
    else:
        await set_status(kube, name, "NotReady", failing={"InferenceReady": "PodsNotReady"})
    await start_pod(kube, name, port)
    return name


def _served(url: str) -> int:
    return len(httpx.get(url + "/stand-in/timeline", timeout=30).json())


async def test_bench_an_inferenceset_spreads_over_its_ready_replicas(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    await _inference_set(kube, 3)
    saved = tmp_path / "run.json"
    with standin(ttft_s=0.02, tpot_s=0.005) as one, standin(ttft_s=0.02, tpot_s=0.005) as two:
        ports = [int(u.rsplit(":", 1)[1]) for u in (one, two)]
        await _replica(kube, 0, True, ports[0])
        await _replica(kube, 1, True, ports[1])
        await _replica(kube, 2, False, ports[1])  # not ready: gets nothing
        code, out, err = await kaito("bench", f"is/{SET}", "-c", "4", "-n", "8", "--input-tokens", "10",
                                     "--output-tokens", "8", "--save", str(saved))  # fmt: skip
        assert code == 0, err
        # 4 connections, one to each ready replica in turn: both served the load (+ warm-up)
        counts = [_served(one), _served(two)]
        assert sum(counts) == 9 and min(counts) >= 3, (counts, err)
        # a plain name no Workspace has is the InferenceSet's
        code, _, err = await kaito("bench", SET, "-c", "1", "-n", "1", "--output-tokens", "4")
        assert code == 0, err
    data = json.loads(saved.read_text())
    assert data["meta"]["inferenceset"] == SET
    assert data["meta"]["replicas"] == [f"{SET}-0", f"{SET}-1"]
    assert data["steps"][0]["figures"]["completed"] == 8
    assert data["meta"]["plan_decode_tokens_per_s"] > 50 and "the plan's decode ceiling is" in out


async def test_bench_an_inferenceset_without_a_ready_replica_says_why(kube: KubeEmulator) -> None:
    await _inference_set(kube, 1)
    await _replica(kube, 0, False, 1)
    code, _, err = await kaito("bench", f"is/{SET}", "-n", "1")
    assert code == 2 and f"inferenceset '{SET}' has no ready replica" in err and "Traceback" not in err
    code, _, err = await kaito("bench", "is/nothing", "-n", "1")
    assert code == 2 and "inferenceset 'nothing' not found" in err
    code, _, err = await kaito("bench", "nothing", "-n", "1")
    assert code == 2 and "workspace 'nothing' not found" in err and "no inferenceset is named" in err
