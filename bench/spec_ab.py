"""Speculative decoding on and off in one process: the llama.cpp engine driven directly.

One engine (``--speculative ngram``) serves every run; a run with drafts and one without
(``SamplingParams.speculative=False``) alternate within each round, so both see the same
machine load, threads and prefix cache. Each workload's prompt is cached once before the
rounds. Reports the median over rounds of each mode's tok/s (whole reply, one stream), the
median of the paired ratio, and the acceptance rate of the drafted runs.

    .venv/bin/python bench/spec_ab.py --rounds 5 --max-tokens 128 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_compare

from pykaito.catalog.embedded import embedded_gguf_path
from pykaito.runtime.engine import ChatMessage, GenerationRequest, SamplingParams
from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings

FRESH = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


async def one_run(
    engine: LlamaCppEngine, prompt: list[int], params: SamplingParams
) -> tuple[float, int, int, int]:
    """tok/s of the whole reply, its tokens, and the draft tokens and accepted tokens it added."""
    before = engine.spec.snapshot()
    start = time.perf_counter()
    tokens = 0
    async for delta in engine.generate(GenerationRequest("ab", prompt, params)):
        tokens += len(delta.token_ids)
    elapsed = time.perf_counter() - start
    after = engine.spec.snapshot()
    return tokens / elapsed, tokens, after[1] - before[1], after[2] - before[2]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-draft", type=int, default=0, help="0: the engine's default")
    parser.add_argument(
        "--draft-cost", type=float, help="a draft token's share of a step; default: timed at load; 0: free"
    )
    parser.add_argument("--temperature", type=float, nargs="*", default=[0.0, 0.7])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    extra: dict[str, Any] = {"max_draft": args.max_draft} if args.max_draft else {}
    if args.draft_cost is not None:
        extra["draft_cost"] = args.draft_cost
    engine = LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(),
            n_ctx=2 * 2048,
            max_running=2,
            threads=args.threads,
            speculative="ngram",
            **extra,
        )
    )
    await engine.start()
    print(f"step cost (tokens: one-token steps): {engine.cost_curve.describe()}", flush=True)
    workloads = {**serve_compare.COPY_WORKLOADS, "fresh-story": FRESH}
    results: dict[str, Any] = {}
    try:
        for name, messages in workloads.items():
            chat = [ChatMessage(m["role"], m["content"]) for m in messages]
            prompt = engine.tokenize(engine.render_chat(chat))
            for temperature in args.temperature:
                base = SamplingParams(max_tokens=args.max_tokens, temperature=temperature, top_p=0.95, seed=7)
                await one_run(engine, prompt, SamplingParams(max_tokens=1, temperature=0, speculative=False))
                runs: dict[bool, list[tuple[float, int, int, int]]] = {True: [], False: []}
                for r in range(args.rounds):
                    order = (True, False) if r % 2 == 0 else (False, True)
                    for spec in order:
                        params = SamplingParams(**{**base.__dict__, "speculative": spec, "seed": 7 + r})
                        runs[spec].append(await one_run(engine, prompt, params))
                on = [tok_s for tok_s, *_ in runs[True]]
                off = [tok_s for tok_s, *_ in runs[False]]
                drafted = sum(d for *_, d, _a in runs[True])
                accepted = sum(a for *_, a in runs[True])
                row = {
                    "spec_on_tok_s": round(statistics.median(on), 1),
                    "spec_off_tok_s": round(statistics.median(off), 1),
                    "ratio": round(statistics.median(a / b for a, b in zip(on, off, strict=True)), 2),
                    "acceptance": round(accepted / drafted, 2) if drafted else None,
                    "tokens_on": [n for _, n, _, _ in runs[True]],
                    "tokens_off": [n for _, n, _, _ in runs[False]],
                }
                results[f"{name} t={temperature}"] = row
                print(f"{name:15} t={temperature:<4} {json.dumps(row)}", flush=True)
    finally:
        await engine.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
