"""Running ``kaito bench`` against the stand-in server, whose timing is set, in a child process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from pykaito.bench import load, prompts
from pykaito.bench.figures import StepFigures, step_figures
from pykaito.bench.load import Budget, Plan, RunResult, Step
from pykaito.bench.samples import Sample
from pykaito.bench.standin import Timing, standin_process
from tests.netutil import free_port


@contextmanager
def standin(**timing: float) -> Iterator[str]:
    with standin_process(free_port(), Timing(**timing)) as url:  # type: ignore[arg-type]
        yield url


def measure(
    url: str,
    plan: Plan,
    *,
    input_tokens: int = 50,
    output_tokens: int = 20,
    turns: int = 1,
) -> RunResult:
    async def go() -> RunResult:
        target = load.Target(url)
        async with load.new_client(target, 2) as client:
            workload = await prompts.synthetic(
                load.token_counter(client, "standin"),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                turns=turns,
                pool=8,
            )
        return await load.run(target, workload, plan)

    return asyncio.run(go())


def fixed(concurrency: int, requests: int, **kwargs: object) -> Plan:
    return Plan(budget=Budget(requests=requests), steps=(Step(concurrency=concurrency),), **kwargs)  # type: ignore[arg-type]


def served(url: str, skip: int = 1) -> StepFigures:
    """The figures of what the stand-in itself did (its own clock), after its first ``skip`` requests.

    Each request runs from when the stand-in read it to its last token's write: the reference a
    client's figures are held against (both processes read the same monotonic clock).
    """
    timeline = httpx.get(url + "/stand-in/timeline", timeout=30).json()[skip:]
    samples = [
        Sample(
            start=r["received"],
            end=r["writes"][-1],
            chunk_times=r["writes"],
            output_tokens=len(r["writes"]),
            status=200,
        )
        for r in timeline
        if r["writes"]
    ]
    return step_figures(samples)
