"""Reports of one or more runs: read saved runs, write the HTML report.

The HTML report is one self-contained file: the tables are plain HTML, every plot is an inline SVG
drawn by pykaito.bench.plots, nothing is fetched when it opens. The plots need matplotlib (the
``plots`` extra); without it the report has the tables and a line saying how to get the plots, so
an image without matplotlib (the CPU runtime's, which runs the benchmark Job) still writes it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pykaito.bench.figures import Distribution, StepFigures, step_figures
from pykaito.bench.load import RunResult, Step, StepResult
from pykaito.bench.samples import Sample
from pykaito.errors import InputError

INSTALL_PLOTS = "pip install 'pykaito[plots]'"


def plots_missing() -> str | None:
    """Why reports have no plots here (matplotlib is not installed), or None when they have them."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        if not _is_matplotlib(exc):
            raise
        return f"matplotlib is not installed; for the plots: {INSTALL_PLOTS}"
    return None


def _is_matplotlib(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").split(".")[0] == "matplotlib"


def read_run(path: Path) -> RunResult:
    """A run saved by ``kaito bench --save`` (or printed by ``-o json``)."""
    try:
        data = json.loads(path.read_text())
        steps = []
        for raw in data["steps"]:
            load = raw["load"]
            step = Step(load.get("concurrency"), load.get("rate"), load.get("max_concurrency"))
            samples = [Sample.from_json(s) for s in raw.get("samples", [])]
            figures = _figures_from_json(raw["figures"]) if not samples else step_figures(samples, None)
            if samples and raw["figures"].get("goodput") is not None:
                figures = _figures_from_json(raw["figures"])
            lag = Distribution(**raw["client_lag"]) if raw.get("client_lag") else None
            steps.append(StepResult(step, figures, samples, float(raw.get("origin", 0.0)), lag))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not a saved kaito bench run ({exc}): write one with --save FILE.json"
        ) from exc
    return RunResult(dict(data.get("meta", {})), steps)


def _figures_from_json(data: dict[str, Any]) -> StepFigures:
    values = dict(data)
    for key in ("ttft", "tpot", "itl", "e2e"):
        values[key] = Distribution(**data[key])
    return StepFigures(**values)


def run_name(result: RunResult, index: int) -> str:
    return str(
        result.meta.get("name")
        or result.meta.get("workspace")
        or result.meta.get("url")
        or f"run {index + 1}"
    )


def _cell(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value * scale:.{digits}f}"
    )


def _table(result: RunResult) -> str:
    head = [
        "load",
        "ok",
        "failed",
        "429",
        "req/s",
        "out tok/s",
        "total tok/s",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
    ]
    head += ["TPOT p50", "ITL p50", "ITL p99", "E2E p50", "E2E p99", "tok/s per stream", "goodput req/s"]
    rows = []
    for s in result.steps:
        f = s.figures
        cells = [
            html.escape(s.step.label), str(f.completed), str(f.failed), str(f.rate_limited),
            _cell(f.request_throughput, digits=2), _cell(f.output_throughput),
            _cell(f.total_token_throughput),
            _cell(f.ttft.p50, 1000), _cell(f.ttft.p90, 1000), _cell(f.ttft.p99, 1000),
            _cell(f.tpot.p50, 1000),
            _cell(f.itl.p50, 1000), _cell(f.itl.p99, 1000), _cell(f.e2e.p50, 1000), _cell(f.e2e.p99, 1000),
            _cell(f.per_stream_tokens_per_s), "-" if f.goodput is None else _cell(f.goodput, digits=2),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.meta { color: #555; font-size: 0.9rem; }
.note { color: #8a5a00; }
"""


def html_report(results: Sequence[RunResult]) -> str:
    """One self-contained HTML page: the runs' settings and tables, then the plots (or, without
    matplotlib, a line saying how to get them)."""
    title = "kaito bench: " + " vs ".join(run_name(r, i) for i, r in enumerate(results))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    for i, result in enumerate(results):
        meta = result.meta
        parts.append(f"<h2>{html.escape(run_name(result, i))}</h2><p class='meta'>")
        for key in (
            "url",
            "model",
            "workload",
            "api",
            "budget",
            "slo",
            "started",
            "plan_decode_tokens_per_s",
        ):
            if meta.get(key) is not None:
                parts.append(f"<b>{key}</b>: {html.escape(str(meta[key]))}<br>")
        parts.append("</p>" + _table(result))
    try:
        from pykaito.bench.plots import figures, svg
    except ModuleNotFoundError as exc:
        if not _is_matplotlib(exc):
            raise
        note = f"No plots: matplotlib was not installed where this report was written ({INSTALL_PLOTS})."
        parts.append(f"<p class='note' id='no-plots'>{html.escape(note, quote=False)}</p>")
    else:
        for name, fig in figures(results).items():
            parts.append(f"<figure id='plot-{name}' class='plot'>{svg(fig)}</figure>")
    parts.append("</body></html>")
    return "".join(parts)
