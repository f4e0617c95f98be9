"""`kaito bench` as a user runs it: a child process against the stand-in, transcripts asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.conftest import standin
from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def kaito(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pykaito.cli.main", *args], capture_output=True, text=True, timeout=180
    )


SMALL = ["-n", "6", "--input-tokens", "10", "--output-tokens", "5"]


def test_run_json_save_html_png_report_and_compare(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    html, png = tmp_path / "a.html", tmp_path / "png"
    with standin(ttft_s=0.02, tpot_s=0.005) as url:
        out = kaito("bench", url, "-c", "1,2", *SMALL, "--slo", "ttft=500ms", "-o", "json", "--save", str(a),
                    "--html", str(html), "--png", str(png))  # fmt: skip
        assert out.returncode == 0, out.stderr
        other = kaito("bench", url, "-r", "20", *SMALL, "--save", str(b))
        assert other.returncode == 0, other.stderr
    data = json.loads(out.stdout)
    assert data["meta"]["model"] == "standin" and data["meta"]["slo"] == {"ttft": 0.5}
    assert [s["label"] for s in data["steps"]] == ["concurrency 1", "concurrency 2"]
    for step in data["steps"]:
        assert len(step["samples"]) == 6
        assert step["figures"]["completed"] == 6 and step["figures"]["good_requests"] == 6
        assert all(len(s["chunk_times"]) == 5 for s in step["samples"])
    assert json.loads(a.read_text())["steps"][0]["samples"] == data["steps"][0]["samples"]
    page = html.read_text()
    assert page.count("<svg") == 4 and "concurrency 2" in page
    assert "<link" not in page and "src=" not in page and "<script" not in page  # self-contained
    assert sorted(p.name for p in png.iterdir()) == [
        "itl.png",
        "latency-distribution.png",
        "throughput.png",
        "ttft.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in png.iterdir())
    assert "saved" in out.stderr and "wrote" in out.stderr

    # the table of the second run, rate-based
    assert "rate 20/s" in other.stderr and "TTFT p50 ms" in other.stdout and "20/s" in other.stdout

    report = kaito("bench", "report", str(a))
    assert report.returncode == 0, report.stderr
    assert "goodput req/s (ttft=500ms)" in report.stdout and "c=2" in report.stdout

    compare = tmp_path / "compare.html"
    both = kaito("bench", "compare", str(a), str(b), "--html", str(compare))
    assert both.returncode == 0, both.stderr
    page = compare.read_text()
    assert "a vs b" in page and page.count("<svg") == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--slo", "latency=1s"], "--slo: 'latency=1s' is not an objective", id="bad-slo"),
        pytest.param(["-c", "0"], "every value must be at least 1", id="zero-concurrency"),
        pytest.param(["-r", "fast"], "write numbers separated by commas", id="bad-rate"),
        pytest.param(["--duration", "soon"], "not a duration", id="bad-duration"),
        pytest.param(
            ["--dataset", "/nonexistent/x.jsonl"], "cannot read /nonexistent/x.jsonl", id="no-dataset"
        ),
        pytest.param(["--api", "grpc"], "--api 'grpc': use chat or completions", id="bad-api"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    with standin() as url:
        out = kaito("bench", url, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("error:") == 1


def test_unreachable_endpoint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = kaito("bench", url, "-n", "1")
    assert out.returncode == 2
    assert f"cannot reach {url}" in out.stderr and "Traceback" not in out.stderr


def test_failing_endpoint_says_why() -> None:
    with standin(fail_every=1) as url:
        out = kaito("bench", url, "-n", "1", "--model", "standin", "--input-tokens", "5")
    assert out.returncode == 2
    assert "failed its first request: HTTP 500: stand-in failure" in out.stderr


def test_compare_needs_two_runs(tmp_path: Path) -> None:
    out = kaito("bench", "compare", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "at least two saved runs" in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    out = kaito("bench", "report", str(bad))
    assert out.returncode == 2 and "is not a saved kaito bench run" in out.stderr


def test_ceiling_reports_the_load_generators_own_rate() -> None:
    out = kaito("bench", "ceiling", "-d", "2s", "-c", "16", "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["failed"] == 0 and data["chunks_per_request"] == 50
    assert data["requests_per_s"] > 50 and data["chunks_per_s"] == pytest.approx(
        50 * data["requests_per_s"], rel=0.01
    )


def test_help_lists_the_subcommands() -> None:
    out = kaito("bench", "--help")
    assert out.returncode == 0
    for word in ("run", "compare", "report", "ceiling"):
        assert word in out.stdout
