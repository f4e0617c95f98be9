"""`kaito bench`: measure an OpenAI-compatible endpoint, a local server or a Workspace.

kaito bench URL|WORKSPACE|is/SET [opts] a concurrency sweep (default), fixed loads or rates
kaito bench compare A.json B.json       overlay saved runs in one report
kaito bench report RUN.json             the HTML report (and PNGs) of a saved run
kaito bench ceiling                     the load generator's own ceiling on this machine
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from pykaito.bench.figures import Slo, parse_duration
from pykaito.bench.load import Budget, Plan, RunResult, Step, StepResult, Target, run
from pykaito.bench.samples import Sample
from pykaito.cli.output import OutputFormat, console, err_console
from pykaito.client.endpoint import API_KEY_ENV
from pykaito.errors import InputError


class _DefaultRun(TyperGroup):
    """``kaito bench URL`` means ``kaito bench run URL``: the other words are subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_DefaultRun,
    help="Measure an OpenAI-compatible endpoint: TTFT, inter-token latency, throughput, goodput.",
    no_args_is_help=True,
)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: write whole numbers separated by commas, e.g. 1,4,16") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag} {text!r}: every value must be at least 1")
    return values


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: write numbers separated by commas, e.g. 2,5,10") from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{flag} {text!r}: every rate must be positive (requests per second)")
    return values


class LiveProgress:
    """A rich progress bar per step on stderr: requests done, output tokens/s, failures."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn(
                "{task.fields[done]:>5} req  {task.fields[tps]:>8.1f} out tok/s  {task.fields[failed]} failed"
            ),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.task: Any = None
        self.budget = Budget(requests=1)
        self.started = 0.0
        self.done = self.failed = self.tokens = 0

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step_started(self, step: Step, budget: Budget) -> None:
        self.budget, self.started = budget, time.perf_counter()
        self.done = self.failed = self.tokens = 0
        total = budget.requests if budget.requests is not None else budget.duration_s
        self.task = self.progress.add_task(step.label, total=total, done=0, tps=0.0, failed=0)

    def request_done(self, sample: Sample) -> None:
        self.done += 1
        if sample.ok:
            self.tokens += sample.output_tokens
        else:
            self.failed += 1
        elapsed = time.perf_counter() - self.started
        completed = (
            self.done if self.budget.requests is not None else min(elapsed, self.budget.duration_s or 0)
        )
        tps = self.tokens / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, completed=completed, done=self.done, tps=tps, failed=self.failed)

    def step_done(self, result: StepResult) -> None:
        self.progress.update(self.task, completed=self.progress.tasks[-1].total)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:.1f}"


def _short(step: Step) -> str:
    return step.label.replace("concurrency ", "c=").replace("rate ", "")


ROWS: list[tuple[str, Any]] = [
    ("requests ok", lambda f: str(f.completed)),
    ("failed", lambda f: str(f.failed)),
    ("  of them 429", lambda f: str(f.rate_limited)),
    ("requests/s", lambda f: f"{f.request_throughput:.2f}"),
    ("output tokens/s", lambda f: f"{f.output_throughput:.1f}"),
    ("total tokens/s", lambda f: f"{f.total_token_throughput:.1f}"),
    *[(f"TTFT {p} ms", lambda f, p=p: _ms(getattr(f.ttft, p))) for p in ("p50", "p90", "p99")],
    *[(f"ITL {p} ms", lambda f, p=p: _ms(getattr(f.itl, p))) for p in ("p50", "p90", "p99")],
    *[(f"TPOT {p} ms", lambda f, p=p: _ms(getattr(f.tpot, p))) for p in ("p50", "p90", "p99")],
    *[(f"E2E {p} ms", lambda f, p=p: _ms(getattr(f.e2e, p))) for p in ("p50", "p90", "p99")],
    ("tokens/s per stream", lambda f: f"{f.per_stream_tokens_per_s:.1f}"),
]


def summary_table(result: RunResult) -> Table:
    """One column per step, one row per figure (narrow enough for a terminal)."""
    title = (
        f"{result.meta.get('model', '')} at {result.meta.get('url', '')}: {result.meta.get('workload', '')}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    for step in result.steps:
        table.add_column(_short(step.step), justify="right")
    rows = list(ROWS)
    slo = result.meta.get("slo")
    if slo:
        rule = ",".join(f"{k}={v * 1000:g}ms" for k, v in slo.items())
        rows.append((f"goodput req/s ({rule})", lambda f: "-" if f.goodput is None else f"{f.goodput:.2f}"))
    for name, get in rows:
        table.add_row(name, *(get(step.figures) for step in result.steps))
    return table


def _print_errors(result: RunResult) -> None:
    for step in result.steps:
        lag, ttft = step.client_lag, step.figures.ttft.p50
        if lag and lag.count and lag.p99 > max(0.005, 0.05 * (ttft if ttft == ttft else 0.0)):
            err_console.print(
                f"{step.step.label}: kaito bench's own event loop ran up to {lag.p99 * 1000:.0f} ms late "
                "(p99); the machine it runs on is busy, so latencies may read up to that much high",
                style="yellow",
                highlight=False,
            )
        errors = step.figures.errors
        if errors:
            first = next((s.error for s in step.samples if not s.ok), "")
            kinds = ", ".join(f"{k}: {v}" for k, v in errors.items())
            err_console.print(f"{step.step.label}: {kinds} (first: {first})", style="yellow", highlight=False)


def _save(result: RunResult, save: Path | None, html: Path | None, png: Path | None) -> None:
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
        err_console.print(f"saved {save}", highlight=False)
    if html:
        from pykaito.bench.report import html_report

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(html_report([result]))
        _wrote_html(html)
    if png:
        from pykaito.bench.plots import write_pngs

        for path in write_pngs([result], png):
            err_console.print(f"wrote {path}", highlight=False)


def _wrote_html(path: Path) -> None:
    from pykaito.bench.report import plots_missing

    missing = plots_missing()
    if missing:
        err_console.print(f"wrote {path} without plots ({escape(missing)})", style="yellow", highlight=False)
    else:
        err_console.print(f"wrote {path}", highlight=False)


def _check_png(png: Path | None) -> None:
    """Refuse --png before any work when matplotlib is missing (the PNGs are nothing but plots)."""
    from pykaito.bench.report import plots_missing

    missing = plots_missing() if png else None
    if missing:
        raise InputError(f"--png: {missing}; --save and --html work without it")


@bench_app.command("run")
def run_command(
    target: Annotated[
        str,
        typer.Argument(
            help="A URL (http://host:port), a Workspace's name, or an InferenceSet's (is/NAME, or NAME "
            "when no Workspace has it: every ready replica is measured, as its Service spreads load)."
        ),
    ],
    concurrency: Annotated[
        str | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Fixed concurrencies, e.g. 1,4,16 (default: 1, 2, 4 ... until throughput stops growing).",
        ),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", "-r", help="Poisson request rates per second, e.g. 2,5,10.")
    ] = None,
    max_concurrency: Annotated[
        int,
        typer.Option(
            "--max-concurrency",
            help="Largest sweep step; with --rate, the most requests in flight (0: no cap).",
        ),
    ] = 256,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration", "-d", help="Length of each step, e.g. 30s (default 20s unless --requests)."
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option("--requests", "-n", help="Requests per step (with --duration: whichever ends first)."),
    ] = None,
    input_tokens: Annotated[
        int, typer.Option("--input-tokens", help="Synthetic prompt length in tokens.")
    ] = 256,
    output_tokens: Annotated[
        int, typer.Option("--output-tokens", help="Tokens asked for per request (max_tokens).")
    ] = 128,
    shared_prefix: Annotated[
        int,
        typer.Option(
            "--shared-prefix", help="Tokens of text every prompt starts with (shows prefix caching)."
        ),
    ] = 0,
    turns: Annotated[
        int, typer.Option("--turns", help="User turns per conversation (multi-turn over the chat API).")
    ] = 1,
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="JSONL conversations: {messages}, {prompt} or ShareGPT lines."),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option("--api", help="chat or completions (default: completions for synthetic prompts)."),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option("--slo", help="Objectives for goodput, e.g. ttft=500ms,tpot=50ms (also itl, e2e)."),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="Model name (default: the first /v1/models lists).")
    ] = "",
    api_key: Annotated[str, typer.Option("--api-key", envvar=API_KEY_ENV, help="Bearer token.")] = "",
    ignore_eos: Annotated[
        bool,
        typer.Option(
            "--ignore-eos",
            help="Ask the server to ignore end-of-sequence (vLLM), so every answer is --output-tokens long.",
        ),
    ] = False,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the prompts and arrival times.")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one request may take.")] = 600.0,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="table, or json (every figure and raw sample on stdout)."),
    ] = OutputFormat.table,
    save: Annotated[
        Path | None, typer.Option("--save", help="Write the run (with raw samples) to this JSON file.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML report (its plots need matplotlib)."),
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Write the plots as PNG images into this folder.")
    ] = None,
    status_file: Annotated[
        Path | None,
        typer.Option("--status-file", help="Write the few figures a Workspace's status records (JSON)."),
    ] = None,
    reference_concurrency: Annotated[
        int, typer.Option("--reference-concurrency", help="Concurrency whose TTFT --status-file reports.")
    ] = 4,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace of the Workspace.")] = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context.")] = None,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file.")] = None,
) -> None:
    """Measure TARGET: a sweep of concurrencies, fixed concurrencies (-c) or Poisson rates (-r)."""
    from pykaito.bench import prompts

    if output is OutputFormat.yaml:
        raise InputError("--output yaml is not offered by kaito bench: use table or json")
    _check_png(png)
    if api not in (None, "chat", "completions"):
        raise InputError(f"--api {api!r}: use chat or completions")
    budget = Budget(
        parse_duration(duration, "--duration") if duration else (None if requests else 20.0), requests
    )
    steps: list[Step] = []
    if concurrency:
        steps += [Step(concurrency=n) for n in _ints(concurrency, "--concurrency")]
    if rate:
        cap = max_concurrency or None
        steps += [Step(rate=r, max_concurrency=cap) for r in _floats(rate, "--rate")]
    if max_concurrency < 0:
        raise InputError("--max-concurrency must not be negative")
    plan = Plan(
        budget=budget,
        steps=tuple(steps),
        sweep_max=0 if steps else max(1, max_concurrency),
        slo=Slo.parse(slo) if slo else None,
        temperature=temperature,
        ignore_eos=ignore_eos,
        seed=seed,
    )

    async def go(url: str, meta: dict[str, Any]) -> RunResult:
        if dataset is None:
            meta = {**meta, "input_tokens": input_tokens, "output_tokens": output_tokens}
        t = Target(url, model=model, api_key=api_key, timeout_s=timeout)
        if dataset is not None:
            workload = prompts.from_jsonl(dataset, output_tokens, api)
        else:
            from pykaito.bench.load import discover_model, new_client, token_counter

            async with new_client(t, 4) as client:
                name = model or await discover_model(client, url)
                workload = await prompts.synthetic(
                    token_counter(client, name),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    shared_prefix_tokens=shared_prefix,
                    turns=turns,
                    api=api,
                    seed=seed,
                )
        with LiveProgress() as live:
            return await run(t, workload, plan, live, meta)

    if _is_url(target):
        result = asyncio.run(go(target, {}))
    else:
        from pykaito.cli.bench_target import workspace_endpoint

        with workspace_endpoint(target, namespace, context, kubeconfig) as (url, meta):
            result = asyncio.run(go(url, meta))
    _print_errors(result)
    if output is OutputFormat.json:
        typer.echo(json.dumps(result.to_json()))
    else:
        console.print(summary_table(result))
        ceiling = result.meta.get("plan_decode_tokens_per_s")
        if ceiling and result.steps:
            single = result.steps[0].figures.per_stream_tokens_per_s
            console.print(
                f"single-stream speed {single:.1f} tok/s; the plan's decode ceiling is {ceiling:.0f} tok/s "
                f"({single / ceiling:.0%} of it)",
                highlight=False,
            )
    _save(result, save, html, png)
    if status_file is not None:
        from pykaito.bench.summary import performance_summary

        summary = performance_summary(result, reference_concurrency)
        status_file.write_text(json.dumps(summary, separators=(",", ":")))


def _is_url(target: str) -> bool:
    from pykaito.cli.set_cmds import set_target

    if "://" not in target and set_target(target) is not None:
        return False  # is/NAME: an InferenceSet
    return "://" in target or ":" in target or "/" in target or target.startswith("localhost")


def load_run(path: Path) -> RunResult:
    from pykaito.bench.report import read_run

    return read_run(path)


@bench_app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Saved runs (kaito bench --save FILE.json).")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the comparison report.")] = Path(
        "bench-compare.html"
    ),
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write the plots as PNGs into this folder.")
    ] = None,
) -> None:
    """Overlay two or more saved runs: throughput and latency against load, side by side."""
    from pykaito.bench.report import html_report

    if len(runs) < 2:
        raise InputError("give at least two saved runs to compare")
    _check_png(png)
    results = [load_run(p) for p in runs]
    for path, result in zip(runs, results, strict=True):
        result.meta.setdefault("name", path.stem)
        console.print(summary_table(result))
    html.write_text(html_report(results))
    _wrote_html(html)
    if png:
        from pykaito.bench.plots import write_pngs

        for path in write_pngs(results, png):
            err_console.print(f"wrote {path}", highlight=False)


@bench_app.command("report")
def report_command(
    run_file: Annotated[Path, typer.Argument(help="A saved run (kaito bench --save FILE.json).")],
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Write the plots as PNGs into this folder.")
    ] = None,
) -> None:
    """Show a saved run's table and write its HTML report or PNG plots."""
    _check_png(png)
    result = load_run(run_file)
    console.print(summary_table(result))
    _save(result, None, html, png)


@bench_app.command("ceiling")
def ceiling_command(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Streams in flight.")] = 64,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="Chunks per answer.")] = 50,
    duration: Annotated[str, typer.Option("--duration", "-d")] = "10s",
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """How many streamed requests and chunks per second this process can measure.

    Runs against a stand-in server on 127.0.0.1 that answers instantly, so what it measures is the
    load generator's own limit: figures from a real server well below it are the server's.
    """
    from pykaito.bench import prompts
    from pykaito.bench.standin import Timing, free_port, standin_process

    port = free_port()

    async def go(url: str) -> RunResult:
        t = Target(url, model="standin")
        workload = await prompts.synthetic(
            _no_tokenizer, input_tokens=16, output_tokens=output_tokens, pool=16
        )
        plan = Plan(
            budget=Budget(parse_duration(duration, "--duration")), steps=(Step(concurrency=concurrency),)
        )
        with LiveProgress() as live:
            return await run(t, workload, plan, live)

    with standin_process(port, Timing(ttft_s=0.0, tpot_s=0.0)) as url:
        result = asyncio.run(go(url))
    f = result.steps[0].figures
    data = {
        "requests_per_s": round(f.request_throughput, 1),
        "chunks_per_s": round(f.output_throughput, 1),
        "concurrency": concurrency,
        "chunks_per_request": output_tokens,
        "failed": f.failed,
    }
    if output is OutputFormat.json:
        typer.echo(json.dumps(data))
        return
    console.print(
        f"this process measures up to [bold]{f.request_throughput:,.0f}[/] streamed requests/s and "
        f"[bold]{f.output_throughput:,.0f}[/] chunks/s ({concurrency} streams, {output_tokens} chunks each, "
        f"{f.failed} failed)"
    )


async def _no_tokenizer(text: str) -> int | None:
    return None


def register(app: typer.Typer) -> None:
    """Add ``kaito bench`` to the app."""
    app.add_typer(bench_app, name="bench")
