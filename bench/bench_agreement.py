"""`kaito bench` beside bench/serve_compare.py on the same pykaito server and workload.

One llama.cpp server (the one serve_compare starts for pykaito) serves the embedded model; in each
round, for each concurrency N, serve_compare's throughput workload (N story prompts at once,
streaming /v1/completions, temperature 0, ``ignore_eos``) and `kaito bench URL -c N -n N
--ignore-eos` with the same kind of prompts (a JSONL dataset built with serve_compare's own prompt
function, fresh prompts each time so no prefix cache helps either) run one after the other, the
order rotated every round; each starts with the same uncounted warm-up request (kaito bench sends
one by design). The two agree when the median over rounds of their ratio is within 10 % for output
tokens/s, TTFT p50 and ITL p50.

A third arm, "serve_compare, connect in step", runs serve_compare's workload as it ran before
2026-12-01: each request opening its own connection inside the step instead of before it. Set
beside the other two in the same run, it shows what that difference alone does to the figures.

    PYTHONPATH=src .venv/bin/python bench/bench_agreement.py --rounds 4 --concurrency 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import serve_compare  # noqa: E402

from pykaito.bench.figures import percentile  # noqa: E402
from pykaito.bench.sse import Endpoint  # noqa: E402

FIGURES = ("tok_s", "ttft_p50", "ttft_p95", "itl_p50")
ARMS = ("serve_compare", "kaito bench", "serve_compare, connect in step")
WARM_UP = "Warm-up request, not measured: reply with one word."


def kaito_bench(url: str, n: int, max_tokens: int, tag: str) -> dict[str, Any]:
    """One `kaito bench` step of N streams, N requests, serve_compare's prompts; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "stories.jsonl"
        lines = [
            {"prompt": serve_compare.story_prompt(serve_compare.TOPICS[i % 10], f"{tag}-{i}")}
            for i in range(n)
        ]
        dataset.write_text("".join(json.dumps(line) + "\n" for line in lines))
        cmd = [sys.executable, "-m", "pykaito.cli.main", "bench", url, "-c", str(n), "-n", str(n)]
        cmd += ["--dataset", str(dataset), "--api", "completions", "--output-tokens", str(max_tokens)]
        cmd += ["--ignore-eos"]
        cmd += ["-o", "json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kaito bench failed ({done.returncode}): {done.stderr[-800:]}")
    step = json.loads(done.stdout)["steps"][0]
    f = step["figures"]
    ttfts = sorted(s["chunk_times"][0] - s["start"] for s in step["samples"] if s["chunk_times"])
    return {
        "complete": f["completed"],
        "tokens": f["output_tokens"],
        "tok_s": f["output_throughput"],
        "ttft_p50": f["ttft"]["p50"],
        "ttft_p95": percentile(ttfts, 95),
        "itl_p50": f["itl"]["p50"],
        "ttfts": ttfts,
        "tokens_per_stream": [s["output_tokens"] for s in step["samples"]],
        "errors": [s["error"] for s in step["samples"] if s["error"]][:3],
    }


def prefill_groups(ttfts: list[float], gap_s: float = 0.05) -> str:
    """How a step's first tokens came: ``1+3`` is one alone, then three together (gaps over ``gap_s``).

    Requests that reach a continuous-batching server at nearly the same moment are prefilled in
    one batch or in several, depending on whether the server's decode loop had already taken the
    first before the others were read; each batch ends with its first tokens at one moment.
    """
    groups: list[int] = []
    last: float | None = None
    for t in sorted(ttfts):
        if last is None or t - last > gap_s:
            groups.append(0)
        groups[-1] += 1
        last = t
    return "+".join(str(g) for g in groups)


def _brief(figures: dict[str, Any]) -> str:
    f = figures
    return f"{f['tok_s']:6.1f} tok/s ttft {f['ttft_p50'] * 1000:5.0f} ms itl {f['itl_p50'] * 1000:5.1f} ms"


async def rounds(url: str, args: argparse.Namespace) -> dict[int, list[dict[str, Any]]]:
    endpoint = Endpoint(url, timeout_s=600)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            model = str((await client.get(url + "/v1/models")).json()["data"][0]["id"])
        usage = await serve_compare.detect_usage(endpoint, model)
        out: dict[int, list[dict[str, Any]]] = {n: [] for n in args.concurrency}
        for r in range(args.rounds):
            for n in args.concurrency:
                pair: dict[str, Any] = {}
                shift = r % len(ARMS)
                order = ARMS[shift:] + ARMS[:shift]
                for who in order:
                    tag = f"a{ARMS.index(who)}-c{n}-r{r}"
                    if who != "kaito bench":
                        if who != "serve_compare":
                            endpoint.close()  # as before: only the warm-up's connection is open
                        # the same uncounted warm-up request kaito bench sends first: a server
                        # left idle while the other tool started answers its next request late
                        await serve_compare.stream_completion(endpoint, model, WARM_UP, 8, usage=usage)
                        pair[who] = await serve_compare.throughput(
                            endpoint, model, n, args.max_tokens, tag, usage, open_first=who == "serve_compare"
                        )
                    else:
                        pair[who] = await asyncio.to_thread(kaito_bench, url, n, args.max_tokens, tag)
                pair["order"] = list(order)
                line = " | ".join(f"{who} {_brief(pair[who])}" for who in ARMS)
                print(f"round {r + 1} c={n}: {line}", flush=True)
                for who in order:
                    if pair[who]["errors"]:
                        print(f"  {who} errors: {pair[who]['errors']}", flush=True)
                out[n].append(pair)
    finally:
        endpoint.close()
    return out


def report(results: dict[int, list[dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines = [
        f"Model `{meta['model']}`, {meta['threads']} threads, --parallel {meta['parallel']}, "
        f"{meta['max_tokens']} output tokens per request, {meta['rounds']} rounds, {meta['machine']}, "
        f"load average at the start {meta['load_start']}, at the end {meta['load_end']}.",
        "",
        "Medians over rounds; a ratio is the arm's figure over serve_compare's in the same round "
        "(median over rounds, min-max in brackets).",
        "",
        "| streams | figure | serve_compare | kaito bench | ratio | serve_compare, connect in step | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, pairs in results.items():
        for fig in FIGURES:
            scale = 1.0 if fig == "tok_s" else 1000.0
            unit = "tok/s" if fig == "tok_s" else "ms"
            base = [p["serve_compare"][fig] for p in pairs]
            cells = [f"{percentile(base, 50) * scale:.1f}"]
            for who in ARMS[1:]:
                values = [p[who][fig] for p in pairs]
                ratios = [y / x for x, y in zip(base, values, strict=True) if x and x == x and y == y]
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "n/a"
                cells += [f"{percentile(values, 50) * scale:.1f}", f"{percentile(ratios, 50):.2f} ({spread})"]
            lines.append(f"| {n} | {fig.replace('_', ' ')} ({unit}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "First tokens per step: how the N requests' first tokens came (1+3: one alone, then three "
        "together), the TTFTs of all rounds pooled, and the first request's TTFT (median over rounds).",
        "",
        "| streams | arm | steps by shape | pooled TTFT p50 ms | pooled TTFT mean ms | first TTFT ms |",
        "|---|---|---|---|---|---|",
    ]
    for n, pairs in results.items():
        if n == 1:
            continue
        for who in ARMS:
            shapes = [prefill_groups(p[who]["ttfts"]) for p in pairs]
            counts = ", ".join(f"{shape} x{shapes.count(shape)}" for shape in sorted(set(shapes)))
            pooled = [t for p in pairs for t in p[who]["ttfts"]]
            first = percentile([min(p[who]["ttfts"]) for p in pairs if p[who]["ttfts"]], 50)
            mean = sum(pooled) / len(pooled) if pooled else float("nan")
            lines.append(
                f"| {n} | {who} | {counts} | {percentile(pooled, 50) * 1000:.0f} | {mean * 1000:.0f} "
                f"| {first * 1000:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the report (markdown) and raw rounds (.json)")
    args = parser.parse_args()
    model = serve_compare.embedded_model()
    threads = args.threads or serve_compare.physical_cores()
    port = serve_compare.free_port()
    cmd = [sys.executable, str(HERE / "serve_compare.py"), "serve-pykaito", "--model", str(model)]
    cmd += ["--port", str(port), "--threads", str(threads), "--parallel", str(args.parallel), "--ctx", "8192"]
    url = f"http://127.0.0.1:{port}"
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as server:
        try:
            deadline = time.monotonic() + 180
            while not serve_compare.is_ready(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the pykaito server did not start")
                time.sleep(0.5)
            results = asyncio.run(rounds(url, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    meta = {
        "model": model.name,
        "threads": threads,
        "parallel": args.parallel,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_start": load_start,
        "load_end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    md = report(results, meta)
    print()
    print(md)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(md)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"meta": meta, "rounds": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
