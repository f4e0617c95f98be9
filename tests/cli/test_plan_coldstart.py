"""`kaito plan` shows the cold start on paper: download at every pod start against weights on the node."""

from __future__ import annotations

import json

from tests.cli.conftest import Kaito


def test_kaito_plan_shows_the_cold_start(kaito: Kaito) -> None:
    result = kaito("plan", "phi-4-mini-instruct", "-i", "Standard_NC24ads_A100_v4", "--download-gbps", "10")
    assert result.code == 0, result.err
    assert "weights 7.15 GiB: download at 10 Gbit/s 6 s, read from disk at 1 GiB/s 7 s" in result.out
    assert (
        "time to weights loaded: 13 s downloading at every pod start, 7 s with the weights on the node"
        in result.out
    )
    data = json.loads(
        kaito("plan", "phi-4-mini-instruct", "-i", "Standard_NC24ads_A100_v4", "-o", "json").out
    )
    assert data["cold_start"] == {"download_s": 61.4, "read_s": 7.2, "download_gbps": 1.0, "disk_gibs": 1.0}
