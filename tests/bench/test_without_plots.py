"""`kaito bench` where matplotlib is not installed (the CPU runtime image, which runs the benchmark
Job): runs are measured and saved, the HTML report has its tables and says how to get the plots,
and --png is refused before any work with the same advice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pykaito.bench.figures import step_figures
from pykaito.bench.load import RunResult, Step, StepResult
from pykaito.bench.report import INSTALL_PLOTS, html_report, plots_missing
from pykaito.bench.samples import Sample

INSTALL = "pip install 'pykaito[plots]'"  # what a user reads: not INSTALL_PLOTS, so a typo shows


def sample(start: float) -> Sample:
    times = [start + 0.1 + 0.01 * i for i in range(5)]
    return Sample(start=start, end=times[-1], chunk_times=times, input_tokens=10, output_tokens=5, status=200)


def a_run() -> RunResult:
    steps = []
    for concurrency in (1, 2):
        samples = [sample(0.2 * i) for i in range(4)]
        steps.append(StepResult(Step(concurrency=concurrency), step_figures(samples), samples))
    return RunResult({"url": "http://127.0.0.1:1", "model": "m"}, steps)


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import matplotlib` fails as it does where it is not installed (restored afterwards)."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "pykaito.bench.plots", raising=False)


def test_the_report_has_its_plots_where_matplotlib_is_installed() -> None:
    assert plots_missing() is None
    page = html_report([a_run()])
    assert page.count("<svg") == 4 and "no-plots" not in page


@pytest.mark.usefixtures("no_matplotlib")
def test_without_matplotlib_the_report_has_the_tables_and_says_how_to_get_plots() -> None:
    assert plots_missing() == f"matplotlib is not installed; for the plots: {INSTALL_PLOTS}"
    page = html_report([a_run()])
    assert "<svg" not in page
    assert "concurrency 2" in page and "<table>" in page  # the tables are all there
    assert "id='no-plots'" in page and INSTALL in page


def _kaito_without_matplotlib(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.argv = ['kaito', *sys.argv[1:]]; "
        "from pykaito.cli.main import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_kaito_bench_report_without_matplotlib(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(a_run().to_json()))
    html = tmp_path / "run.html"

    out = _kaito_without_matplotlib("bench", "report", str(saved), "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert "concurrency" in out.stdout or "c=2" in out.stdout  # the table still prints
    stderr = " ".join(out.stderr.split())
    assert f"wrote {html} without plots" in stderr and INSTALL in stderr
    page = html.read_text()
    assert "<svg" not in page and INSTALL in page

    png = tmp_path / "png"
    refused = _kaito_without_matplotlib("bench", "report", str(saved), "--png", str(png))
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "--png: matplotlib is not installed" in message and INSTALL in message, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not png.exists()
