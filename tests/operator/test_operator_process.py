"""``python -m pykaito.operator`` as a process: kopf's own login, /healthz, /metrics and the webhook."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.netutil import free_port
from tests.operator import chart
from tests.operator.cluster import add_node, apply, call, condition, eventually, example, live, run_pods
from tests.operator.conftest import emulated_cluster, operator_env
from tests.operator.kube_emulator import WORKSPACES, KubeEmulator

SEED = "workspace-phi-4-mini-h100"


def review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "review-1",
            "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


async def test_operator_process_serves_health_metrics_and_admission(kube: KubeEmulator) -> None:
    webhook, metrics, health = free_port(), free_port(), free_port()
    env = {**os.environ, **operator_env(webhook), "KAITO_OPERATOR_METRICS_PORT": str(metrics)}
    command = [sys.executable, "-m", "pykaito.operator", "--all-namespaces", "--liveness-port", str(health)]
    command += ["--log-format", "json"]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, timeout=60)
            await apply(kube, example(f"{SEED}.yaml"))
            await eventually(lambda: condition(live(kube, WORKSPACES, "default", SEED), "NodeClaimReady"))

            async def scraped() -> str | None:
                text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
                return text if 'kaito_workspaces{state="Pending"} 1.0' in text else None

            text = await eventually(scraped)
            assert "kaito_reconcile_duration_seconds_count" in text
            assert 'kaito_workspaces{state="Ready"} 0.0' in text

            bad = example(f"{SEED}.yaml")
            bad["metadata"] = {"name": "bad", "namespace": "default"}
            bad["inference"]["preset"]["name"] = "phi-5-giant"
            answer = (
                await http.post(f"http://127.0.0.1:{webhook}/validate-workspace", json=review(bad))
            ).json()
            assert answer["response"]["uid"] == "review-1"
            assert answer["response"]["allowed"] is False
            assert answer["response"]["status"]["code"] == 422
            assert "inference.preset.name" in answer["response"]["status"]["message"]

            good = example(f"{SEED}.yaml")
            good["metadata"]["namespace"] = "default"
            answer = (
                await http.post(f"http://127.0.0.1:{webhook}/validate-workspace", json=review(good))
            ).json()
            assert answer["response"]["allowed"] is True
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert b'"message"' in err  # JSON log lines


async def test_operator_without_node_provisioning_runs_under_that_charts_rbac(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nodeProvisioning.enabled=false`` grants nothing on NodeClaims: the operator neither watches
    nor lists them (a Workspace still deletes), on a cluster where the NodeClaim CRD exists."""
    values = ("nodeProvisioning.enabled=false", "replicas=1")
    async with emulated_cluster(tmp_path, monkeypatch, *values) as kube:
        webhook, health = free_port(), free_port()
        env = {**os.environ, **operator_env(webhook), "KAITO_OPERATOR_NODE_PROVISIONING": "false"}
        command = [sys.executable, "-m", "pykaito.operator", "--liveness-port", str(health)]
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:

                async def healthy() -> bool:
                    try:
                        return (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(healthy, timeout=60)
            name = "workspace-phi-4-mini-byo"
            await apply(kube, example("workspace-byo-nodes.yaml"))
            labels = {"apps": "phi-4-byo", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
            await add_node(kube, "gpu-node-1", {**labels, "nvidia.com/gpu.count": "1"})
            await eventually(lambda: live(kube, "apps/v1/statefulsets", "default", name), timeout=60)
            await run_pods(kube, name)
            await eventually(
                lambda: (
                    condition(live(kube, WORKSPACES, "default", name), "WorkspaceSucceeded").get("status")
                    == "True"
                ),
                timeout=60,
            )
            await call(kube, "DELETE", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{name}")
            await eventually(lambda: live(kube, WORKSPACES, "default", name) is None, timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        operator = chart.operator_user(kube.manifests)
        assert kube.denied(operator) == [], kube.denied(operator)
        assert not [a for a in kube.audit if a.user == operator.name and a.resource == "nodeclaims"]
