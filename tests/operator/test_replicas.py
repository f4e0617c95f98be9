"""Two operator processes with peering: one acts, the other waits, and takes over when the first dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.operator.cluster import WS_PATH, call, example, objects
from tests.operator.faults import FaultyKube
from tests.operator.kube_emulator import NODECLAIMS
from tests.operator.peers import LIFETIME, two_peers, until


def workspace(name: str) -> dict[str, object]:
    ws = example("workspace-phi-4-mini-h100.yaml")
    ws["metadata"] = {"name": name, "namespace": "default"}
    return ws


def claims_of(kube: FaultyKube, name: str) -> list[dict[str, object]]:
    return [c for c in objects(kube, NODECLAIMS) if c["metadata"]["labels"]["kaito.sh/workspace"] == name]


@pytest.mark.timeout(240)
async def test_one_replica_acts_and_the_other_takes_over_when_it_is_killed(tmp_path: Path) -> None:
    async with two_peers(tmp_path) as peers:
        kube, first, logs = peers.kube, peers.first, peers.logs
        await call(kube, "POST", WS_PATH.format(ns="default"), workspace("before"))
        await until(lambda: claims_of(kube, "before"), timeout=30)
        await until(lambda: "[default/before]" in logs["first"].read_text(), timeout=30)
        assert "[default/" not in logs["second"].read_text()  # the standby handled nothing

        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed = time.monotonic()
        await call(kube, "POST", WS_PATH.format(ns="default"), workspace("after"))
        await until(lambda: claims_of(kube, "after"), timeout=60)
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL: {takeover:.1f}s (peering lifetime {LIFETIME}s)")
        assert takeover < LIFETIME + 15  # the lifetime, plus generous slack for a busy machine
        await until(lambda: "[default/after]" in logs["second"].read_text(), timeout=30)  # it was the second
        assert len(claims_of(kube, "before")) == 1 and len(claims_of(kube, "after")) == 1
