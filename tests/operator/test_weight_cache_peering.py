"""Two operator replicas with peering and the weight cache on: only the acting one sweeps caches.

kopf pauses the standby replica's handlers, not the tasks it started; the sweep asks the peering
object itself. A cache nobody uses is deleted by the acting replica only, and by the other once the
first is killed and its entry expires.
"""

from __future__ import annotations

import signal
from pathlib import Path

import kmock
import pytest
import yaml

from tests.operator.cluster import call, live
from tests.operator.faults import FaultyKube
from tests.operator.killloop import _kubeconfig, operator_env, start_operator, stop
from tests.operator.test_replicas import LIFETIME, PEERINGS, _acting, _tail, until

PVCS = "v1/persistentvolumeclaims"


async def orphan(kube: FaultyKube, name: str) -> None:
    """A weight cache no Workspace uses (its Workspaces are gone)."""
    pvc = {
        "metadata": {"name": name, "labels": {"kaito.sh/weight-cache": name}},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "11Gi"}}},
    }
    await call(kube, "POST", "/api/v1/namespaces/default/persistentvolumeclaims", pvc)


@pytest.mark.timeout(240)
async def test_only_the_acting_replica_collects_unused_caches(tmp_path: Path) -> None:
    async with FaultyKube() as kube, kmock.Server(kube) as server:
        kube.declare(PEERINGS, "ClusterKopfPeering", namespaced=False, subresources=set())
        await call(kube, "POST", "/apis/kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": "pykaito"}})
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump(_kubeconfig(str(server.url).rstrip("/"))))
        env = {
            **operator_env(config),
            "KAITO_OPERATOR_PEERING_LIFETIME_SECONDS": str(LIFETIME),
            "KAITO_OPERATOR_WEIGHT_CACHE_ENABLED": "true",
            "KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE": "1s",
            "KAITO_OPERATOR_WEIGHT_CACHE_GC_INTERVAL_SECONDS": "0.2",
        }
        logs = {"first": tmp_path / "first.log", "second": tmp_path / "second.log"}
        first = await start_operator(env, logs["first"], "--peering", "--priority", "200")
        second = await start_operator(env, logs["second"], "--peering", "--priority", "100")
        try:

            def peers() -> int:
                body = kube.objects[(kmock.resource(PEERINGS), None, "pykaito")].raw
                return len(body.get("status") or {})

            await until(lambda: peers() == 2, timeout=60)
            await until(lambda: not _acting(logs["second"].read_text()), timeout=30)

            await orphan(kube, "kaito-weights-old-model-0d6e4079")
            await until(lambda: live(kube, PVCS, "default", "kaito-weights-old-model-0d6e4079") is None, 30)
            await until(
                lambda: "deleted weight cache default/kaito-weights-old-model" in logs["first"].read_text(),
                10,
            )
            standby = logs["second"].read_text()
            assert "weight cache default/" not in standby  # it neither marked nor deleted anything

            first.send_signal(signal.SIGKILL)
            await first.wait()
            await orphan(kube, "kaito-weights-older-model-0d6e4079")
            await until(
                lambda: live(kube, PVCS, "default", "kaito-weights-older-model-0d6e4079") is None,
                LIFETIME + 30,
            )
            assert "deleted weight cache default/kaito-weights-older-model" in logs["second"].read_text()
        except AssertionError as exc:
            tails = "\n".join(f"--- {k}:\n{_tail(v)}" for k, v in logs.items())
            raise AssertionError(f"{exc}\n{tails}") from exc
        finally:
            await stop(first, signal.SIGKILL)
            await stop(second)
        assert second.returncode == 0, logs["second"].read_text()[-3000:]
