"""The operator SIGKILLed at random points of its reconciles converges: no duplicate, nothing stuck.

A short run of the loop bench/reliability_operator.py runs 50 times (see tests/operator/killloop.py).
"""

from __future__ import annotations

from pathlib import Path

import kmock
import pytest

from tests.operator.faults import FaultyKube
from tests.operator.killloop import kill_loop


@pytest.mark.timeout(300)
async def test_operator_killed_mid_reconcile_converges(tmp_path: Path) -> None:
    async with FaultyKube() as kube, kmock.Server(kube) as server:
        result = await kill_loop(kube, str(server.url).rstrip("/"), tmp_path, kills=6, seed=7)
    assert result.kills == 6
    assert any(w > 0 for w in result.writes_before_kill), result.writes_before_kill  # killed mid-flight
    assert result.deleted and len(result.created) > 3  # deletions and creations happened between kills
    assert result.ok, "\n".join(result.problems) + "\n" + (tmp_path / "operator.log").read_text()[-3000:]
