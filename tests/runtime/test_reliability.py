"""The reliability suite (bench/reliability.py) in its short form: every check passes on a real server."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reliability.py"


@pytest.fixture
def reliability() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_reliability_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    for name in [n for n in sys.modules if n == "reliability" or n.startswith("bench_reliability_")]:
        del sys.modules[name]  # the suite and the sub-suites registered with it
    sys.modules.pop(spec.name, None)


@pytest.mark.timeout(240)
def test_the_short_suite_passes_against_the_real_server(reliability: Any) -> None:
    rows = reliability.run(short=True)
    print(reliability.table(rows))
    names = [row.name for row in rows]
    assert {"openapi-fuzz", "malformed", "disconnects", "overflow", "slow-clients"} <= set(names)
    assert {"history kill-9", "operator kills"} <= set(names)  # bench/reliability_*.py
    problems = {row.name: row.result.problems for row in rows if row.result.problems}
    assert not problems, reliability.table(rows)
    by_name = {row.name: row.result.figures for row in rows}
    assert by_name["openapi-fuzz"]["cases"] >= 100
    assert by_name["openapi-fuzz"]["5xx"] == 0
    assert "429" in by_name["overflow"]["statuses"]
    assert by_name["slow-clients"]["still open"] == 0
    assert by_name["history kill-9"]["acknowledged turns"] > 0 and by_name["operator kills"]["kills"] == 3


def test_a_check_registered_elsewhere_runs_and_its_failure_fails_the_run(reliability: Any) -> None:
    @reliability.check("always-loses", server=False)
    def loses(ctx: Any) -> Any:
        return reliability.Result(figures={"lost": 1}, problems=["1 turn lost"])

    with pytest.raises(ValueError, match="registered already"):
        reliability.check("always-loses")(loses)
    rows = reliability.run(["always-loses"])
    assert [(r.name, r.result.problems) for r in rows] == [("always-loses", ["1 turn lost"])]
    assert "FAIL" in reliability.table(rows)
    assert reliability.main(["--only", "always-loses"]) == 1
    assert reliability.main(["--only", "no-such-check"]) == 2
