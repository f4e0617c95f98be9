"""The web app's Performance page in a real headless Chromium: a short run's progress bar, then its plots.

`kaito ui` runs in a child process against the bench stand-in (known timing, a child process too):
each request takes about half a second, so a run of 3 steps x 4 requests lasts seconds and the page
is watched while it runs. A MutationObserver in the page records every state the progress bar
shows, so the assertions about "while it runs" do not depend on catching a moment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pykaito.bench.report import read_run
from tests.apps.browser import kaito_ui
from tests.apps.test_webapp_browser import browser, wait_idle  # noqa: F401 (the fixture)
from tests.bench.conftest import standin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
expect.set_options(timeout=60_000)  # two shared cores: a page can take a while

WATCH_PROGRESS = """() => {
    window.__progress = [];
    const note = () => {
        const box = document.querySelector('[data-testid="stProgress"]');
        if (!box) return;
        const bar = box.querySelector('[role="progressbar"]');
        const value = bar ? Number(bar.getAttribute('aria-valuenow')) : null;
        const state = {text: box.innerText.trim(), value: value};
        const last = window.__progress[window.__progress.length - 1];
        if (!last || last.text !== state.text || last.value !== state.value) window.__progress.push(state);
    };
    new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                       attributes: true});
}"""


def test_a_short_run_shows_its_progress_then_its_plots(browser: Browser, kaito_home: Path) -> None:  # noqa: F811
    with standin(ttft_s=0.1, tpot_s=0.02) as endpoint, kaito_ui(endpoint) as url:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{url}/Performance")
        expect(page.get_by_text("No benchmark of this endpoint yet")).to_be_visible()
        expect(page.get_by_text(f"Endpoint: {endpoint}")).to_be_visible()
        wait_idle(page)

        form = page.get_by_test_id("stForm")
        requests = form.get_by_label("Requests per step")
        requests.fill("4")
        output = form.get_by_label("Output tokens")
        output.fill("20")  # 0.1 s + 19 x 20 ms: about half a second a request
        inputs = form.get_by_label("Input tokens")
        inputs.fill("16")
        inputs.press("Tab")
        page.evaluate(WATCH_PROGRESS)
        form.get_by_role("button", name="Run a short benchmark").click()

        # while it runs: the bar is on the page and names the step in progress
        bar = page.get_by_test_id("stProgress")
        expect(bar).to_be_visible()
        expect(bar).to_contain_text("requests")
        expect(bar).to_contain_text("done", timeout=120_000)
        expect(page.get_by_text("Latest run")).to_be_visible()
        wait_idle(page)

        seen = page.evaluate("window.__progress")
        running = [s for s in seen if s["value"] is not None and 0 < s["value"] < 100]
        assert len(running) >= 3, seen  # 12 requests: the bar moved in steps, mid-run
        values = [s["value"] for s in running]
        assert values == sorted(values), seen  # and only forward
        texts = " ".join(s["text"] for s in running)
        assert "concurrency 1: " in texts and "/12 requests" in texts, seen
        assert seen[-1]["value"] == 100 and "done" in seen[-1]["text"], seen

        # the run's table and plots, and the run saved as `kaito bench --save` writes it
        table = page.get_by_test_id("stDataFrame")
        expect(table).to_be_visible()
        plots = page.get_by_test_id("stImage")
        expect(plots).to_have_count(4)  # throughput, TTFT and ITL against load, latency distribution
        for i in range(4):
            expect(plots.nth(i).locator("img")).to_be_visible()
            box = plots.nth(i).locator("img").bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
    (saved,) = (kaito_home / "benchmarks").glob("*.json")
    run = read_run(saved)
    assert [s.step.label for s in run.steps] == ["concurrency 1", "concurrency 2", "concurrency 4"]
    assert [s.figures.completed for s in run.steps] == [4, 4, 4]
    assert json.loads(saved.read_text())["meta"]["url"] == endpoint
