"""``-o json|yaml`` on the cluster commands (apply, describe, wait, delete) against the emulator."""

from __future__ import annotations

import json

from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_cluster_cli import SEED, SEED_FILE, Kaito, kaito, set_status

__all__ = ["kaito"]  # the fixture


async def test_apply_describe_wait_delete_print_json(kube: KubeEmulator, kaito: Kaito) -> None:
    result = await kaito("apply", "-f", str(SEED_FILE), "-o", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == [{"name": SEED, "namespace": "default", "action": "created"}]
    await set_status(kube, SEED, "Ready")
    result = await kaito("describe", SEED, "-o", "json")
    assert result.code == 0, result.err
    described = json.loads(result.out)
    assert described["workspace"]["metadata"]["name"] == SEED
    assert any("Standard_NC40ads_H100_v5" in line for line in described["plan"]["explanation"])
    assert isinstance(described["events"], list)
    result = await kaito("wait", SEED, "--timeout", "5s", "-o", "json")
    assert (result.code, json.loads(result.out)) == (0, {"name": SEED, "outcome": "ready", "state": "Ready"})
    result = await kaito("delete", SEED, "-o", "yaml")
    assert result.code == 0, result.err
    assert "action: deleted" in result.out and f"name: {SEED}" in result.out
