"""kopf peering's rule as the operator applies it to its own periodic work (pure)."""

from __future__ import annotations

import datetime
from typing import Any

import kopf
import pytest

from pykaito.operator.peering import Peering, acting, from_kopf

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: float = 1, lifetime: int = 15) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "priority", "expected"),
    [
        pytest.param({"a": peer(200), "b": peer(100)}, 200, True, id="highest-acts"),
        pytest.param({"a": peer(200), "b": peer(100)}, 100, False, id="lower-stands-by"),
        pytest.param(
            {"a": peer(200, seconds_ago=20), "b": peer(100)}, 100, True, id="higher-expired-takeover"
        ),
        pytest.param({"a": peer(100), "b": peer(100)}, 100, False, id="same-priority-conflict-all-pause"),
        pytest.param({"a": peer(200)}, 100, False, id="not-yet-registered"),
        pytest.param({}, 100, False, id="empty-object"),
        pytest.param(
            {"b": peer(100), "x": {"priority": 999}}, 100, True, id="entry-without-lastseen-ignored"
        ),
        pytest.param(
            {"b": {**peer(100), "lastseen": "2026-12-01T11:59:59"}}, 100, True, id="naive-time-is-utc"
        ),
    ],
)
def test_acting_follows_kopf_peering(peers: dict[str, Any], priority: int, expected: bool) -> None:
    assert acting(peers, priority, NOW) is expected


def test_from_kopf_settings() -> None:
    settings = kopf.OperatorSettings()  # as kopf run --standalone leaves it
    settings.peering.standalone = True
    assert from_kopf(settings) == Peering() and Peering().standalone
    settings = kopf.OperatorSettings()  # as kopf run --peering pykaito --priority 7 --namespace a sets it
    settings.peering.mandatory, settings.peering.name, settings.peering.priority = True, "pykaito", 7
    settings.peering.clusterwide = False
    assert from_kopf(settings) == Peering(name="pykaito", priority=7, clusterwide=False)
