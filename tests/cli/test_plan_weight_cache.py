"""``kaito plan`` shows the weight cache a Workspace on the model would use, and what it saves."""

from __future__ import annotations

import json

from tests.cli.test_render_cli import kaito


def test_plan_names_the_cache_and_the_first_and_later_starts() -> None:
    table = kaito("plan", "phi-4-mini-instruct", "-i", "Standard_NC24ads_A100_v4")
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "PersistentVolumeClaim kaito-weights-microsoft-phi-4-mini-instruct-c0fb9e74 (11 GiB)" in text
    assert "filled once by a download Job (69 s)" in text and "reads it (7 s at the disk rate)" in text
    data = json.loads(
        kaito("plan", "phi-4-mini-instruct", "-i", "Standard_NC24ads_A100_v4", "-o", "json").stdout
    )
    assert data["weight_cache"] == {
        "pvc": "kaito-weights-microsoft-phi-4-mini-instruct-c0fb9e74",
        "size_gib": 11,
        "first_start_s": 68.6,
        "later_starts_s": 7.2,
    }


def test_cpu_plans_have_no_cache() -> None:
    data = json.loads(kaito("plan", "smollm2-135m-instruct", "--runtime", "llamacpp", "-o", "json").stdout)
    assert "weight_cache" not in data
