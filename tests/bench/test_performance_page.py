"""The web app's Performance page through Streamlit's AppTest, against the bench stand-in."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pykaito.bench.report import read_run
from tests.bench.conftest import standin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PAGE = str(resources.files("pykaito.apps") / "pages" / "Performance.py")


def test_start_a_short_benchmark_and_see_its_plots(monkeypatch: pytest.MonkeyPatch, kaito_home: Path) -> None:
    with standin(ttft_s=0.01, tpot_s=0.002) as url:
        monkeypatch.setenv("KAITO_ENDPOINT", url)
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.run()
        assert not at.exception
        assert "No benchmark of this endpoint yet" in at.info[0].value
        at.multiselect[0].set_value([1, 2])
        at.number_input[0].set_value(4)
        at.number_input[1].set_value(10)
        at.number_input[2].set_value(5)
        at.button[0].click()
        at.run()
        assert not at.exception, at.exception
    saved = list((kaito_home / "benchmarks").glob("*.json"))
    assert len(saved) == 1
    run = read_run(saved[0])
    assert [s.step.label for s in run.steps] == ["concurrency 1", "concurrency 2"]
    assert all(s.figures.completed == 4 for s in run.steps)
    frame = at.dataframe[0].value
    assert list(frame["load"]) == ["concurrency 1", "concurrency 2"] and list(frame["ok"]) == [4, 4]
    assert any("Latest run" in h.value for h in at.subheader)
    assert [c.value for c in at.caption][-4:] == ["throughput", "ttft", "itl", "latency-distribution"]


def test_server_away_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_ENDPOINT", "http://127.0.0.1:9")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.button[0].click()
    at.run()
    assert not at.exception
    assert "cannot reach http://127.0.0.1:9" in at.error[0].value
