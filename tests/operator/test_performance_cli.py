"""`kaito get -o wide` and `kaito describe` show a Workspace's status.performance."""

from __future__ import annotations

import pytest

from tests.operator.cluster import apply, call
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_cluster_cli import SEED, SEED_FILE, Kaito, kaito, set_status  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PERFORMANCE = {
    "metrics": {
        "peakTokensPerMinute": {
            "description": "stress/high-concurrency",
            "value": "123457",
            "unit": "tokens/min",
            "config": {"maxConcurrency": "16", "measuredAt": "2026-11-30T17:00:00+00:00"},
        },
        "timeToFirstToken": {
            "description": "latency/p50",
            "value": "85.5",
            "unit": "ms",
            "config": {"concurrency": "4"},
        },
        "tokensPerSecondPerStream": {"description": "decode", "value": "41.2", "unit": "tokens/s"},
    }
}


async def test_wide_listing_and_describe_show_performance(kube: KubeEmulator, kaito: Kaito) -> None:  # noqa: F811
    import yaml

    await apply(kube, yaml.safe_load(SEED_FILE.read_text()))
    await set_status(kube, SEED, "Ready")

    before = await kaito("get", "-o", "wide")
    assert before.code == 0, before.err
    header, line = before.out.splitlines()[:2]
    assert "PEAK-TOKENS/MIN" in header and "TTFT-MS" in header
    assert line.split()[-4:] == ["-", "-", "-", "-"]
    described = await kaito("describe", SEED)
    assert "not measured yet" in described.out

    path = f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}/status"
    condition = {
        "type": "BenchmarkCompleted",
        "status": "True",
        "reason": "BenchmarkCompleted",
        "message": "ok",
    }
    current = (await call(kube, "GET", path))["status"]
    status = {"performance": PERFORMANCE, "conditions": [*current["conditions"], condition]}
    await call(kube, "PATCH", path, {"status": status})

    wide = await kaito("get", "-o", "wide")
    assert wide.out.splitlines()[1].split()[-4:] == ["123457", "85.5", "41.2", "done"]
    plain = await kaito("get")
    assert "PEAK-TOKENS/MIN" not in plain.out and "123457" not in plain.out
    described = await kaito("describe", SEED)
    assert described.code == 0, described.err
    assert "Performance" in described.out
    assert (
        "peakTokensPerMinute: 123457 tokens/min (stress/high-concurrency; maxConcurrency=16" in described.out
    )
    assert "timeToFirstToken: 85.5 ms" in described.out
    assert "BenchmarkCompleted" in described.out
