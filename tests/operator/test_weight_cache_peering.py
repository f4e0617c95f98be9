"""Two operator replicas with peering and the weight cache on: only the acting one sweeps caches.

kopf pauses the standby replica's handlers, not the tasks it started; the sweep asks the peering
object itself. A cache nobody uses is deleted by the acting replica only, and by the other once the
first is killed and its entry expires.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.operator.cluster import call, live
from tests.operator.faults import FaultyKube
from tests.operator.peers import LIFETIME, two_peers, until

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
    env = {
        "KAITO_OPERATOR_WEIGHT_CACHE_ENABLED": "true",
        "KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE": "1s",
        "KAITO_OPERATOR_WEIGHT_CACHE_GC_INTERVAL_SECONDS": "0.2",
    }
    async with two_peers(tmp_path, env) as peers:
        kube, first, logs = peers.kube, peers.first, peers.logs
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
