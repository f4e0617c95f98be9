"""The benchmark plots, drawn with matplotlib (the ``plots`` extra: ``pip install 'pykaito[plots]'``).

- throughput against load (output tokens/s and requests/s);
- TTFT and ITL percentiles (p50, p90, p99) against load;
- the latency distributions (TTFT and E2E) of each step, as cumulative curves.

With several runs (``kaito bench compare``) each plot overlays them, one colour per run. Importing
this module without matplotlib raises ModuleNotFoundError; pykaito.bench.report then writes its
reports without plots.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pykaito.bench.figures import StepFigures
from pykaito.bench.load import RunResult, Step
from pykaito.bench.report import run_name
from pykaito.bench.samples import Sample


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
            name = label if len(results) == 1 else f"{run_name(result, i)} {label}"
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
                name = step.step.label if len(results) == 1 else f"{run_name(result, i)} {step.step.label}"
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


def svg(fig: Figure) -> str:
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
