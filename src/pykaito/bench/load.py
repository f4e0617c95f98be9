"""Load shapes and the run driver.

A run is a list of steps; each step holds the load steady and ends after ``duration_s`` seconds
(requests in flight then still finish and count) or after ``requests`` requests:

- fixed concurrency: ``concurrency`` workers, each sending its next request when the last ends;
- fixed rate: requests start at Poisson arrivals of ``rate`` per second, at most
  ``max_concurrency`` in flight when set;
- a sweep: concurrency 1, 2, 4, 8 ... doubling until the output throughput grows by less than
  ``growth`` over the best step so far, a step has errors, or ``max_concurrency`` is reached.

A worker whose request failed waits ``FAILURE_PAUSE_S`` before its next, so a server answering
429 at once is not flooded by a loop. Everything else is the server's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from pykaito.bench.figures import Distribution, Slo, StepFigures, step_figures
from pykaito.bench.prompts import Conversation, Workload
from pykaito.bench.samples import Sample
from pykaito.bench.sse import Endpoint, Opener, send
from pykaito.client.endpoint import normalize_endpoint, unreachable_message
from pykaito.errors import EngineError, InputError

FAILURE_PAUSE_S = 0.05
WARM_UP_PROMPT = "Warm-up request, not measured: reply with one word."


@dataclass(frozen=True)
class Step:
    """The load of one step: a fixed concurrency, or a Poisson rate (with an optional cap)."""

    concurrency: int | None = None
    rate: float | None = None
    max_concurrency: int | None = None

    @property
    def label(self) -> str:
        if self.rate is not None:
            cap = f" (max {self.max_concurrency})" if self.max_concurrency else ""
            return f"rate {self.rate:g}/s{cap}"
        return f"concurrency {self.concurrency}"

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rate": self.rate, "max_concurrency": self.max_concurrency}


@dataclass(frozen=True)
class Budget:
    """When a step ends: after a duration, after a number of requests, or whichever comes first."""

    duration_s: float | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s is None and self.requests is None:
            raise InputError("give a step length: --duration or --requests")
        if self.duration_s is not None and self.duration_s <= 0:
            raise InputError("--duration must be positive")
        if self.requests is not None and self.requests < 1:
            raise InputError("--requests must be at least 1")


@dataclass
class StepResult:
    """One step's figures and samples; ``origin`` is the clock reading its sample times count from.

    ``client_lag`` is how late the client's own event loop ran during the step (see ``LagProbe``).
    """

    step: Step
    figures: StepFigures
    samples: list[Sample]
    origin: float = 0.0
    client_lag: Distribution | None = None

    def to_json(self, with_samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"load": self.step.to_json(), "label": self.step.label, "origin": self.origin}
        out["figures"] = self.figures.to_json()
        out["client_lag"] = asdict(self.client_lag) if self.client_lag else None
        if with_samples:
            out["samples"] = [s.to_json() for s in self.samples]
        return out


@dataclass
class RunResult:
    meta: dict[str, Any]
    steps: list[StepResult] = field(default_factory=list)

    def to_json(self, with_samples: bool = True) -> dict[str, Any]:
        return {"meta": self.meta, "steps": [s.to_json(with_samples) for s in self.steps]}


class Observer(Protocol):
    """What a progress display hears about a run."""

    def step_started(self, step: Step, budget: Budget) -> None: ...

    def request_done(self, sample: Sample) -> None: ...

    def step_done(self, result: StepResult) -> None: ...


class Quiet:
    def step_started(self, step: Step, budget: Budget) -> None:
        return

    def request_done(self, sample: Sample) -> None:
        return

    def step_done(self, result: StepResult) -> None:
        return


@dataclass(frozen=True)
class Target:
    """Where to send requests: the server root, the model name, an API key."""

    url: str
    model: str = ""
    api_key: str = ""
    timeout_s: float = 600.0


def new_client(target: Target, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=normalize_endpoint(target.url),
        timeout=httpx.Timeout(target.timeout_s, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        headers={"Authorization": f"Bearer {target.api_key}"} if target.api_key else None,
    )


async def discover_model(client: httpx.AsyncClient, url: str) -> str:
    """The first model ``/v1/models`` lists."""
    try:
        response = await client.get("/v1/models")
    except httpx.HTTPError as exc:
        raise EngineError(unreachable_message(url)) from exc
    if response.status_code != 200:
        raise EngineError(f"{url}/v1/models answered HTTP {response.status_code}: is it an OpenAI API?")
    try:
        return str(response.json()["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EngineError(f"{url}/v1/models lists no model: pass --model NAME") from exc


def token_counter(client: httpx.AsyncClient, model: str) -> Callable[[str], Any]:
    """An async function counting a text's tokens with the server's /tokenize (None without one)."""
    supported = True

    async def count(text: str) -> int | None:
        nonlocal supported
        if not supported:
            return None
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        try:
            response = await client.post("/tokenize", json=body)
            if response.status_code == 200:
                return int(response.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        supported = False
        return None

    return count


class LagProbe:
    """How late the client's own event loop runs: a short sleep, again and again, and its overshoot.

    A client process the machine does not schedule on time (a busy machine, a saturated loop)
    sees every chunk late by as much; this measures that delay so a report can say so.
    """

    PERIOD_S = 0.01

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PERIOD_S)
            self.lags.append(max(0.0, loop.time() - before - self.PERIOD_S))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> Distribution:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        return Distribution.of(self.lags)


class _Driver:
    def __init__(
        self,
        endpoint: Endpoint,
        workload: Workload,
        budget: Budget,
        body_extra: dict[str, Any],
        observer: Observer,
    ) -> None:
        self.endpoint = endpoint
        self.workload = workload
        self.budget = budget
        self.body_extra = body_extra
        self.observer = observer
        self.samples: list[Sample] = []
        self.sent = 0
        self.convs = itertools.count()
        self.clock = asyncio.get_running_loop().time
        self.start = self.clock()
        self.deadline = self.start + budget.duration_s if budget.duration_s else math.inf

    def take(self) -> bool:
        """Whether the budget allows one more request (and count it)."""
        if self.clock() >= self.deadline:
            return False
        if self.budget.requests is not None and self.sent >= self.budget.requests:
            return False
        self.sent += 1
        return True

    async def conversation(self) -> bool:
        """Send one conversation's turns; False when the budget ran out before its first turn."""
        convs = self.workload.conversations
        conv = convs[next(self.convs) % len(convs)]
        history: list[dict[str, Any]] = []
        multi = len(conv.turns) > 1
        for turn in range(len(conv.turns)):
            if not self.take():
                return turn > 0
            request = self.workload.request(conv, history, turn, self.body_extra)
            sample, text = await send(self.endpoint, request, self.start, keep_text=multi)
            self.samples.append(sample)
            self.observer.request_done(sample)
            if not sample.ok:
                await asyncio.sleep(FAILURE_PAUSE_S)
                return True
            if multi:
                history += [
                    {"role": "user", "content": conv.turns[turn]},
                    {"role": "assistant", "content": text},
                ]
        return True

    async def worker(self) -> None:
        while await self.conversation():
            pass

    async def fixed_concurrency(self, n: int) -> None:
        await asyncio.gather(*(self.worker() for _ in range(n)))

    async def poisson(self, rate: float, cap: int | None, seed: int) -> None:
        rng = random.Random(seed)
        gate = asyncio.Semaphore(cap) if cap else None
        tasks: set[asyncio.Task[bool]] = set()

        async def one() -> bool:
            if gate is None:
                return await self.conversation()
            async with gate:
                return await self.conversation()

        clock = self.clock
        next_at = clock()
        launched = 0
        while clock() < self.deadline:
            if self.budget.requests is not None and launched >= self.budget.requests:
                break
            delay = next_at - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                if clock() >= self.deadline:
                    break
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            launched += 1
            next_at += rng.expovariate(rate)
        if tasks:
            await asyncio.gather(*tasks)


async def run_step(
    endpoint: Endpoint,
    workload: Workload,
    step: Step,
    budget: Budget,
    *,
    body_extra: dict[str, Any],
    slo: Slo | None = None,
    observer: Observer | None = None,
    seed: int = 0,
) -> StepResult:
    """Hold one load for one budget and return what it measured."""
    observer = observer or Quiet()
    connections = step.max_concurrency if step.rate is not None else step.concurrency or 1
    if connections:
        await endpoint.prepare(connections)
    observer.step_started(step, budget)
    driver = _Driver(endpoint, workload, budget, body_extra, observer)
    probe = LagProbe()
    probe.start()
    try:
        if step.rate is not None:
            await driver.poisson(step.rate, step.max_concurrency, seed)
        else:
            await driver.fixed_concurrency(step.concurrency or 1)
    finally:
        lag = await probe.stop()
    result = StepResult(step, step_figures(driver.samples, slo), driver.samples, driver.start, lag)
    observer.step_done(result)
    return result


def sweep_steps(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to and including ``max_concurrency``."""
    out = [1]
    while out[-1] * 2 <= max_concurrency:
        out.append(out[-1] * 2)
    if out[-1] != max_concurrency:
        out.append(max_concurrency)
    return out


@dataclass(frozen=True)
class Plan:
    """A run: its steps (or a sweep), their budget, the SLO and request options."""

    budget: Budget
    steps: tuple[Step, ...] = ()
    sweep_max: int = 0  # >0: sweep concurrency 1, 2, 4 ... up to this
    growth: float = 0.05
    slo: Slo | None = None
    temperature: float = 0.0
    ignore_eos: bool = False
    seed: int = 0
    warmup: bool = True


async def run(
    target: Target,
    workload: Workload,
    plan: Plan,
    observer: Observer | None = None,
    meta: dict[str, Any] | None = None,
    opener: Opener | None = None,
) -> RunResult:
    """Run every step of ``plan`` against ``target`` and return the samples and figures.

    ``opener`` replaces the TCP connection to the target (an in-memory server in tests).
    """
    model = target.model
    if not model:
        async with new_client(target, 2) as client:
            model = await discover_model(client, target.url)
    body_extra: dict[str, Any] = {"model": model, "temperature": plan.temperature}
    if plan.ignore_eos:
        body_extra["ignore_eos"] = True
    endpoint = Endpoint(target.url, target.api_key, target.timeout_s, opener)
    try:
        if plan.warmup:
            await _warm_up(endpoint, workload, body_extra, target.url)
        result = RunResult(
            meta={
                "url": normalize_endpoint(target.url),
                "model": model,
                "workload": workload.description,
                "api": workload.api,
                "budget": {"duration_s": plan.budget.duration_s, "requests": plan.budget.requests},
                "slo": plan.slo.to_json() if plan.slo else None,
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **(meta or {}),
            }
        )
        kwargs: dict[str, Any] = {"body_extra": body_extra, "slo": plan.slo, "observer": observer}
        if plan.sweep_max:
            best = 0.0
            for n in sweep_steps(plan.sweep_max):
                step_result = await run_step(
                    endpoint, workload, Step(concurrency=n), plan.budget, seed=plan.seed, **kwargs
                )
                result.steps.append(step_result)
                figures = step_result.figures
                if figures.failed or figures.completed == 0:
                    break
                if best and figures.output_throughput < best * (1 + plan.growth):
                    break
                best = max(best, figures.output_throughput)
        for i, step in enumerate(plan.steps):
            result.steps.append(
                await run_step(endpoint, workload, step, plan.budget, seed=plan.seed + i, **kwargs)
            )
    finally:
        endpoint.close()
    result.meta["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return result


async def _warm_up(endpoint: Endpoint, workload: Workload, body_extra: dict[str, Any], url: str) -> None:
    """One request first: proves the endpoint answers and warms it up; not counted.

    Its prompt is none of the workload's, so no measured request finds its prompt already in the
    server's prefix cache (which would shorten that request's TTFT).
    """
    conv = Conversation((WARM_UP_PROMPT,), 8)
    request = workload.request(conv, [], 0, body_extra)
    sample, _ = await send(endpoint, request, asyncio.get_running_loop().time())
    if sample.ok or sample.status == 429:
        return
    if sample.status == 0 and sample.error.startswith("connection"):
        raise EngineError(unreachable_message(url))
    raise EngineError(f"{url}{request.path} failed its first request: {sample.error}")
