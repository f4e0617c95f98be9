"""Short benchmarks started from the web app, and the latest one kept per endpoint.

Runs are saved as ``benchmarks/<host_port>.json`` in the user data directory (``$KAITO_HOME``),
in the same format as ``kaito bench --save``, so ``kaito bench report`` reads them too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pykaito.apps.history import data_dir
from pykaito.bench import prompts
from pykaito.bench.load import (
    Budget,
    Plan,
    RunResult,
    Step,
    StepResult,
    Target,
    new_client,
    run,
    token_counter,
)
from pykaito.bench.report import read_run
from pykaito.bench.samples import Sample
from pykaito.client.endpoint import normalize_endpoint


@dataclass(frozen=True)
class ShortRun:
    """What the Performance page's form asks for."""

    concurrencies: tuple[int, ...] = (1, 2, 4)
    requests_per_step: int = 8
    input_tokens: int = 128
    output_tokens: int = 64


def run_file(endpoint: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9]+", "_", normalize_endpoint(endpoint).split("://", 1)[-1]).strip("_")
    folder = data_dir() / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.json"


def latest(endpoint: str) -> RunResult | None:
    path = run_file(endpoint)
    return read_run(path) if path.exists() else None


class _Progress:
    def __init__(self, total: int, report: Callable[[float, str], None]) -> None:
        self.total, self.done, self.report, self.label = total, 0, report, ""

    def step_started(self, step: Step, budget: Budget) -> None:
        self.label = step.label

    def request_done(self, sample: Sample) -> None:
        self.done += 1
        self.report(min(1.0, self.done / self.total), f"{self.label}: {self.done}/{self.total} requests")

    def step_done(self, result: StepResult) -> None:
        return


def run_short(endpoint: str, form: ShortRun, report: Callable[[float, str], None]) -> RunResult:
    """Run the short benchmark, calling ``report(fraction, text)`` as requests end; save it."""

    async def go() -> RunResult:
        target = Target(endpoint, timeout_s=300.0)
        async with new_client(target, 2) as client:
            from pykaito.bench.load import discover_model

            model = await discover_model(client, endpoint)
            workload = await prompts.synthetic(
                token_counter(client, model),
                input_tokens=form.input_tokens,
                output_tokens=form.output_tokens,
                pool=16,
            )
        plan = Plan(
            budget=Budget(requests=form.requests_per_step),
            steps=tuple(Step(concurrency=c) for c in form.concurrencies),
        )
        total = form.requests_per_step * len(form.concurrencies)
        return await run(Target(endpoint, model=model), workload, plan, _Progress(total, report))

    result = asyncio.run(go())
    run_file(endpoint).write_text(json.dumps(result.to_json(), separators=(",", ":")))
    return result
