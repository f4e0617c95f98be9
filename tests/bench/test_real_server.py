"""`kaito bench` against the real server (SmolLM2-135M), and its HTML report in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.apps.browser import chromium
from tests.apps.runtime import shared_runtime, stop_shared_runtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LONGEST_PATH = (
    "s => Math.max(...[...s.querySelectorAll('path')].map(p => (p.getAttribute('d') || '').length))"
)


@pytest.fixture(scope="module")
def runtime_url() -> Iterator[str]:
    yield shared_runtime().url
    stop_shared_runtime()


@pytest.fixture(scope="module")
def sweep(runtime_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    folder = tmp_path_factory.mktemp("bench")
    saved, html = folder / "run.json", folder / "run.html"
    out = subprocess.run(
        [sys.executable, "-m", "pykaito.cli.main", "bench", runtime_url, "--max-concurrency", "2",
         "-n", "4", "--input-tokens", "32", "--output-tokens", "12", "--slo", "ttft=5s",
         "--save", str(saved), "--html", str(html)],
        capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return saved, html, {"stdout": out.stdout, "stderr": out.stderr}


def test_short_sweep_against_kaito_serve(sweep: tuple[Path, Path, dict[str, object]]) -> None:
    saved, html, out = sweep
    data = json.loads(saved.read_text())
    assert data["meta"]["model"] == "smollm2-135m-instruct"
    steps = data["steps"]
    assert [s["load"]["concurrency"] for s in steps][:2] == [1, 2]
    for step in steps:
        f = step["figures"]
        assert f["completed"] == 4 and f["failed"] == 0
        # the prompt was sized with the server's /tokenize; usage reports what it counted
        assert all(abs(s["input_tokens"] - 32) <= 2 for s in step["samples"])
        assert all(1 <= s["output_tokens"] <= 12 for s in step["samples"])
        assert f["ttft"]["p50"] > 0 and f["output_throughput"] > 0
    assert "TTFT p50 ms" in str(out["stdout"])
    assert html.stat().st_size > 10_000


def test_html_report_draws_its_plots_in_chromium(
    sweep: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    _, html, _ = sweep
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(html.as_uri())
        plots = page.locator("figure.plot svg")
        expect(plots).to_have_count(4)
        for i in range(4):
            plot = plots.nth(i)
            expect(plot).to_be_visible()
            box = plot.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 150
            # the data lines are drawn: paths with many points inside each plot
            longest = plot.evaluate(LONGEST_PATH)
            assert longest > 100
        expect(page.locator("table").first).to_contain_text("concurrency 1")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
