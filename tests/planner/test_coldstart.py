"""Cold start on paper: download at every pod start against weights already on the node."""

from __future__ import annotations

import pytest

from pykaito.planner.coldstart import cold_start


def test_phi4_mini_at_one_gbit_and_one_gib_per_second() -> None:
    start = cold_start(7.15, download_gbps=1.0, disk_gibs=1.0)
    assert start.download_s == pytest.approx(7.15 * 1024**3 / 125e6)  # 61.4 s
    assert start.read_s == pytest.approx(7.15)
    assert start.cold_s == pytest.approx(start.download_s + 7.15)
    assert start.warm_s == pytest.approx(7.15)


@pytest.mark.parametrize(("gbps", "gibs"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_rates_must_be_positive(gbps: float, gibs: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        cold_start(1.0, gbps, gibs)
