"""A Workspace's measured performance (status.performance) in `kaito get -o wide` and `kaito describe`."""

from __future__ import annotations

from typing import Any

from pykaito.cli.output import OutputFormat

WIDE_COLUMNS = ("PEAK-TOKENS/MIN", "TTFT-MS", "TOKENS/S/STREAM", "BENCHMARK")


GetFormat = OutputFormat  # `kaito get` takes the shared formats, wide included


def _metrics(ws: dict[str, Any]) -> dict[str, Any]:
    return dict(((ws.get("status") or {}).get("performance") or {}).get("metrics") or {})


def _benchmark_condition(ws: dict[str, Any]) -> dict[str, Any]:
    conditions = (ws.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "BenchmarkCompleted"), {})


def wide_cells(ws: dict[str, Any]) -> list[str]:
    """The extra columns of `kaito get -o wide`: the measured figures and the benchmark's status."""
    metrics = _metrics(ws)

    def value(name: str) -> str:
        return str((metrics.get(name) or {}).get("value") or "-")

    annotations = (ws.get("metadata") or {}).get("annotations") or {}
    condition = _benchmark_condition(ws)
    if annotations.get("kaito.sh/disable-benchmark") == "true":
        state = "disabled"
    elif condition.get("status") == "True":
        state = "done"
    elif condition.get("status") == "False":
        state = "failed"
    else:
        state = "-"
    return [value("peakTokensPerMinute"), value("timeToFirstToken"), value("tokensPerSecondPerStream"), state]


def describe_lines(ws: dict[str, Any]) -> list[str]:
    """The Performance section of `kaito describe`: every metric with its unit and settings."""
    metrics = _metrics(ws)
    if not metrics:
        condition = _benchmark_condition(ws)
        if condition.get("status") == "False":
            return [f"  not measured: {condition.get('message', '')}"]
        return ["  not measured yet (the operator benchmarks a Workspace once it is Ready)"]
    lines = []
    for name, metric in metrics.items():
        config = metric.get("config") or {}
        settings = ", ".join(f"{k}={v}" for k, v in config.items())
        unit = f" {metric.get('unit')}" if metric.get("unit") else ""
        lines.append(f"  {name}: {metric.get('value')}{unit} ({metric.get('description', '')}; {settings})")
    return lines
