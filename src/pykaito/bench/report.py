"""Reports of one or more runs: read saved runs, draw the plots, write HTML and PNG.

The HTML report is one self-contained file: every plot is an inline SVG drawn by matplotlib, the
tables are plain HTML, nothing is fetched when it opens. Plots:

- throughput against load (output tokens/s and requests/s);
- TTFT and ITL percentiles (p50, p90, p99) against load;
- the latency distributions (TTFT and E2E) of each step, as cumulative curves.

With several runs (``kaito bench compare``) each plot overlays them, one colour per run.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pykaito.bench.figures import Distribution, StepFigures, step_figures
from pykaito.bench.load import RunResult, Step, StepResult
from pykaito.bench.samples import Sample
from pykaito.errors import InputError


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


def _run_name(result: RunResult, index: int) -> str:
    return str(
        result.meta.get("name")
        or result.meta.get("workspace")
        or result.meta.get("url")
        or f"run {index + 1}"
    )


def _x(step: Step) -> float:
    return float(step.rate if step.rate is not None else step.concurrency or 0)


def _x_label(results: Sequence[RunResult]) -> str:
    rates = any(s.step.rate is not None for r in results for s in r.steps)
    return "request rate (req/s)" if rates else "concurrency"


def _lines(
    ax: Any, results: Sequence[RunResult], series: Sequence[tuple[str, Callable[[StepFigures], float], str]]
) -> None:
    """One line per run and series: a colour per run (per series for one run), a style per series."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks: set[float] = set()
    for i, result in enumerate(results):
        xs = [_x(s.step) for s in result.steps]
        ticks.update(xs)
        for k, (label, get, style) in enumerate(series):
            ys = [get(s.figures) for s in result.steps]
            name = label if len(results) == 1 else f"{_run_name(result, i)} {label}"
            color = colors[(k if len(results) == 1 else i) % len(colors)]
            ax.plot(xs, ys, linestyle=style, color=color, label=name, marker="o")
    ax.grid(True, alpha=0.3)
    if results and all(s.step.rate is None for r in results for s in r.steps):
        ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
        ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def throughput_figure(results: Sequence[RunResult]) -> Figure:
    fig, (tokens, requests) = plt.subplots(1, 2, figsize=(10, 4))
    _lines(tokens, results, [("output tok/s", lambda f: f.output_throughput, "-")])
    tokens.set_ylabel("output tokens/s")
    tokens.set_title("Output throughput against load")
    _lines(requests, results, [("req/s", lambda f: f.request_throughput, "-")])
    requests.set_ylabel("requests/s")
    requests.set_title("Request throughput against load")
    for ax in (tokens, requests):
        ax.set_xlabel(_x_label(results))
    fig.tight_layout()
    return fig


def latency_figure(results: Sequence[RunResult], metric: str, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    series = [
        (f"{metric.upper()} {p}", (lambda f, p=p: getattr(getattr(f, metric), p) * 1000), style)
        for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":"))
    ]
    _lines(ax, results, series)
    ax.set_xlabel(_x_label(results))
    ax.set_ylabel("milliseconds")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def distribution_figure(results: Sequence[RunResult]) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    measures: tuple[tuple[str, Callable[[Sample], float | None]], ...] = (
        ("TTFT", lambda s: s.ttft),
        ("E2E latency", lambda s: s.e2e),
    )
    for ax, (label, get) in zip(axes, measures, strict=True):
        for i, result in enumerate(results):
            for step in result.steps:
                values = sorted(v * 1000 for s in step.samples if s.ok and (v := get(s)) is not None)
                if not values:
                    continue
                ys = [(k + 1) / len(values) for k in range(len(values))]
                name = step.step.label if len(results) == 1 else f"{_run_name(result, i)} {step.step.label}"
                ax.step(values, ys, where="post", label=name)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{label} distribution")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(results: Sequence[RunResult]) -> dict[str, Figure]:
    out = {
        "throughput": throughput_figure(results),
        "ttft": latency_figure(results, "ttft", "Time to first token against load"),
        "itl": latency_figure(results, "itl", "Inter-token latency against load"),
    }
    if any(s.samples for r in results for s in r.steps):
        out["latency-distribution"] = distribution_figure(results)
    return out


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def write_pngs(results: Sequence[RunResult], folder: Path) -> list[Path]:
    """Every plot as a PNG in ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures(results).items():
        path = folder / f"{name}.png"
        fig.savefig(path, format="png", dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


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
"""


def html_report(results: Sequence[RunResult]) -> str:
    """One self-contained HTML page: the runs' settings and tables, then the plots."""
    title = "kaito bench: " + " vs ".join(_run_name(r, i) for i, r in enumerate(results))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    for i, result in enumerate(results):
        meta = result.meta
        parts.append(f"<h2>{html.escape(_run_name(result, i))}</h2><p class='meta'>")
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
    for name, fig in figures(results).items():
        parts.append(f"<figure id='plot-{name}' class='plot'>{_svg(fig)}</figure>")
    parts.append("</body></html>")
    return "".join(parts)
