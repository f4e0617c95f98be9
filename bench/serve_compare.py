"""Serving benchmark: pykaito's llama.cpp server against llama-server and llama-cpp-python's server.

All three serve the same GGUF with the same thread count on 127.0.0.1, started together and
measured in turn within each round (the order rotates from round to round), so the ratios
compare like with like on this machine at this moment:

    .venv/bin/python bench/serve_compare.py              # after bench/setup_llama_server.sh
    .venv/bin/python bench/serve_compare.py --servers pykaito,llama-server --rounds 3

Workloads (OpenAI /v1/completions, streaming, temperature 0, plain-text story prompts):

- throughput: 1, 4 and 8 concurrent streams of ``--max-tokens`` output tokens each. Every request
  asks to go on past end-of-sequence (``ignore_eos``: pykaito, llama-server and vLLM; ``min_tokens``:
  llama-cpp-python and vLLM; a server ignores the field it does not know), and tokens are counted
  from what each stream produced (usage when reported, else content chunks). A round in which a
  stream failed or produced fewer tokens than asked is invalid: it is reported, never averaged in
  (no best round, no ratio). The connections of a step are opened before its clock starts, as
  `kaito bench` does, so every request reaches the server at once and no TTFT holds a handshake;
- mixed load: a short prompt's time to first token (TTFT) alone, then again while 7 other
  streams decode (4 with short prompts, 3 with ~1000-token prompts).

- copy-heavy (``--copy``, OpenAI /v1/chat/completions, one stream, temperature 0): chats whose
  answer repeats text from the prompt: copy a passage, answer by quoting a document, edit a code
  file, and a multi-turn chat that repeats an earlier answer. This is where speculative decoding
  from the prompt's own n-grams pays off. Every round repeats the same chats (a server may then
  draft an earlier round's reply, as pykaito's pool and llama-server's ngram-mod do);
  ``--copy-unseen`` gives each round chats of its own, met for the first time.

Server variants: ``pykaito`` (with ``--speculative ngram``), ``pykaito-spec-off``
(``--speculative off``), ``llama-server`` (its default) and ``llama-server-ngram-simple`` /
``llama-server-ngram-mod`` (``--spec-type ngram-simple`` / ``ngram-mod``):

    .venv/bin/python bench/serve_compare.py --copy --concurrency 1,8,16 --parallel 16 \
        --servers pykaito,pykaito-spec-off,llama-server,llama-server-ngram-simple,llama-server-ngram-mod

Reported per server: total tokens/s, TTFT p50/p95, inter-token latency p50, peak RSS (VmHWM)
and the ratio to llama-server. Results go to bench/results/<date>.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv" / "bin" / "python" if (ROOT / ".venv").exists() else Path(sys.executable)
LLAMA_SERVER = HERE / ".build" / "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
SERVERS = ("pykaito", "llama-server", LLAMA_CPP_PYTHON)
VARIANTS = {  # a variant of a server: its base and the arguments added to the base's command
    "pykaito-spec-off": ("pykaito", ["--speculative", "off"]),
    "llama-server-ngram-simple": ("llama-server", ["--spec-type", "ngram-simple"]),
    "llama-server-ngram-mod": ("llama-server", ["--spec-type", "ngram-mod"]),
}

TOPICS = (
    "a lighthouse keeper who finds a map",
    "a robot learning to paint",
    "two rival bakers in a small town",
    "a dragon afraid of heights",
    "a sailor lost in a storm",
    "a girl who can talk to trees",
    "an old clock that runs backwards",
    "a detective on a train",
    "a cat who becomes mayor",
    "a scientist who shrinks herself",
)
LONG_PARAGRAPH = (
    "The history of the valley is long and full of small events that nobody wrote down. "
    "Farmers planted barley in the spring and harvested it before the autumn rains, "
    "merchants crossed the pass with salt and wool, and every winter the river froze. "
)


PASSAGE = (
    "The old harbour town wakes slowly. Fishermen mend their nets on the quay while gulls circle above "
    "the boats, and the baker opens his shutters to let the smell of fresh bread drift down the narrow "
    "streets. By nine the market square is full of voices: farmers selling apples and cheese, children "
    "chasing each other between the stalls, and an old man playing the accordion beside the fountain. "
    "In the afternoon the wind turns and the tide comes in, lifting the boats against their ropes. When "
    "evening falls the lamps are lit one by one along the sea wall, and the town grows quiet again, "
    "listening to the waves that have shaped its life for five hundred years."
)
DOCUMENT = (
    "Report of the harbour committee, spring meeting.\n\n"
    "1. The north pier needs new timber before the autumn storms; the cost is estimated at 40,000 crowns.\n"
    "2. The fish market will open one hour earlier from May to September, at five in the morning.\n"
    "3. Mooring fees rise by three percent for boats longer than twelve metres.\n"
    "4. The lighthouse lamp was replaced in March and now runs on electricity from the town grid.\n"
    "5. Volunteers are wanted for the summer festival; names go to the harbour office by the first of June."
)
CODE_FILE = """import json
from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int


def load_items(path):
    with open(path) as handle:
        data = json.load(handle)
    return [Item(d["name"], d["price"], d["quantity"]) for d in data]


def total(items):
    result = 0.0
    for item in items:
        result += item.price * item.quantity
    return result


def cheapest(items):
    return min(items, key=lambda item: item.price)


if __name__ == "__main__":
    items = load_items("items.json")
    print(total(items), cheapest(items).name)
"""
COPY_WORKLOADS: dict[str, list[dict[str, str]]] = {
    "copy-passage": [{"role": "user", "content": f"Copy this passage exactly, word for word:\n\n{PASSAGE}"}],
    "quote-document": [
        {
            "role": "user",
            "content": f"{DOCUMENT}\n\nQuote items 2, 3 and 4 of the report word for word.",
        }
    ],
    "edit-code": [
        {
            "role": "user",
            "content": f"Rename the function total to order_total in this file and show the whole file:\n\n"
            f"```python\n{CODE_FILE}```",
        }
    ],
    "multi-turn": [
        {"role": "user", "content": "Describe a day in an old harbour town."},
        {"role": "assistant", "content": PASSAGE},
        {"role": "user", "content": "Please repeat your description exactly as you wrote it."},
    ],
}


def story_prompt(topic: str, tag: str) -> str:
    return f"[{tag}] Here is a long story about {topic}.\n\nOnce upon a time,"


def long_prompt(tag: str, paragraphs: int) -> str:
    return f"[{tag}] " + LONG_PARAGRAPH * paragraphs + "\n\nContinue the history of the valley:"


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def physical_cores() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from pykaito.runtime.engines.llamacpp import default_threads

    return default_threads()


def embedded_model() -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from pykaito.catalog.embedded import embedded_gguf_path

    return embedded_gguf_path()


def server_command(name: str, args: argparse.Namespace, port: int) -> list[str]:
    if name in VARIANTS:
        base, extra = VARIANTS[name]
        return server_command(base, args, port) + extra
    model, threads, parallel, ctx = str(args.model), str(args.threads), str(args.parallel), args.ctx
    if name == "pykaito":
        return [
            str(PYTHON),
            str(Path(__file__).resolve()),
            "serve-pykaito",
            "--model",
            model,
            "--port",
            str(port),
            "--threads",
            threads,
            "--parallel",
            parallel,
            "--ctx",
            str(ctx),
        ]
    if name == "llama-server":
        return [
            str(args.llama_server),
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            str(ctx),
            "--parallel",
            parallel,
            "-t",
            threads,
            "-tb",
            threads,
            "--no-webui",
        ]
    if name == "llama-cpp-python":
        return [
            str(PYTHON),
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(ctx // int(parallel)),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            "--interrupt_requests",
            "False",
        ]
    raise ValueError(f"unknown server {name!r}: use one of {', '.join([*SERVERS, *VARIANTS])}")


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def peak_rss_mib(self) -> float:
        """VmHWM: the highest resident set size of the server process so far."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def is_ready(url: str) -> bool:
    """Ready: /health answers 200 (model loaded), or there is no /health and /v1/models answers."""
    try:
        health = httpx.get(url + "/health", timeout=2)
        if health.status_code == 200:
            return True
        if health.status_code != 404:
            return False
        return httpx.get(url + "/v1/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_server(name: str, args: argparse.Namespace, log_dir: Path) -> Iterator[Running]:
    port = free_port()
    cmd = server_command(name, args, port)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    server = Running(name, proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while starting: see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready in {args.start_timeout} s: see {log_path}")
            if is_ready(server.url):
                break
            time.sleep(0.25)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


# -- client ------------------------------------------------------------------------------------
# One implementation of the figures: requests go through pykaito.bench's streaming client and the
# figures come from pykaito.bench.figures (the code behind `kaito bench`), so the two agree.

sys.path.insert(0, str(ROOT / "src"))
from pykaito.bench.figures import percentile, step_figures  # noqa: E402
from pykaito.bench.samples import Sample  # noqa: E402
from pykaito.bench.sse import CHAT_PATH, COMPLETIONS_PATH, Endpoint, Request, send  # noqa: E402


def completion(model: str, prompt: str, max_tokens: int, usage: bool, exact: bool = False) -> Request:
    """A streamed completion; ``exact`` asks for ``max_tokens`` tokens whatever the model would end with."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
    body["stream"] = True
    if exact:
        body["ignore_eos"] = True  # pykaito, llama-server, vLLM
        body["min_tokens"] = max_tokens  # llama-cpp-python, vLLM
    if usage:
        body["stream_options"] = {"include_usage": True}
    return Request(COMPLETIONS_PATH, body)


async def stream_completion(
    endpoint: Endpoint,
    model: str,
    prompt: str,
    max_tokens: int,
    started: asyncio.Event | None = None,
    usage: bool = True,
    exact: bool = False,
) -> Sample:
    """One streamed completion, timed by pykaito.bench (times relative to its own start)."""
    request = completion(model, prompt, max_tokens, usage, exact)
    sample, _ = await send(endpoint, request, asyncio.get_running_loop().time(), False, started)
    return sample


def pct(values: list[float], q: float) -> float:
    return percentile([v for v in values if v == v], q * 100)


async def detect_usage(endpoint: Endpoint, model: str) -> bool:
    """Whether the server accepts stream_options.include_usage (some reject unknown fields)."""
    r = await stream_completion(endpoint, model, story_prompt("a warm-up", "w"), 4, usage=True)
    if r.ok:
        return True
    r = await stream_completion(endpoint, model, story_prompt("a warm-up", "w2"), 4, usage=False)
    if not r.ok:
        raise RuntimeError(f"warm-up request failed: {r.error}")
    return False


async def throughput(
    endpoint: Endpoint,
    model: str,
    n: int,
    max_tokens: int,
    tag: str,
    usage: bool,
    open_first: bool = True,
) -> dict[str, Any]:
    """``n`` streams at once; the figures are `kaito bench`'s for one step of concurrency ``n``.

    As in `kaito bench`, the step's connections are opened before its clock starts, so every
    request reaches the server at the same moment and no TTFT holds a handshake; a request that
    opened its own connection would reach the server later than one sent on a kept-alive
    connection. ``open_first=False`` measures as this benchmark did before 2026-12-01
    (bench/bench_agreement.py sets the two side by side).
    """
    prompts = [story_prompt(TOPICS[i % len(TOPICS)], f"{tag}-{i}") for i in range(n)]
    if open_first:
        await endpoint.prepare(n)
    t0 = asyncio.get_running_loop().time()
    results = await asyncio.gather(
        *(send(endpoint, completion(model, p, max_tokens, usage, exact=True), t0) for p in prompts)
    )
    return round_figures([sample for sample, _ in results], max_tokens)


def round_figures(samples: list[Sample], max_tokens: int) -> dict[str, Any]:
    """One round of one step: its figures, and whether it measured what it asked for.

    A round is valid when every stream completed with ``max_tokens`` tokens; one that ended early
    (end of sequence on a server that ignores ``ignore_eos``/``min_tokens``) or failed makes the
    round's tokens/s a figure of less work, so such a round is kept for the record and left out
    of the best round and the ratios.
    """
    f = step_figures(samples)
    short = [s.output_tokens for s in samples if s.ok and s.output_tokens < max_tokens]
    return {
        "streams": len(samples),
        "complete": f.completed,
        "short": len(short),
        "valid": f.completed == len(samples) and not short,
        "tokens": f.output_tokens,
        "tokens_per_stream": [s.output_tokens for s in samples],
        "ttfts": sorted(t for s in samples if (t := s.ttft) is not None),
        "wall_s": f.duration_s,
        "tok_s": f.output_throughput,
        "ttft_p50": f.ttft.p50,
        "ttft_p95": pct([t for s in samples if s.ok and (t := s.ttft) is not None], 0.95),
        "itl_p50": f.itl.p50,
        "errors": [s.error for s in samples if s.error][:3],
    }


def summarize_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A server's rounds of one step: figures of its best valid round, tok/s per round (NaN if invalid)."""
    valid = [x for x in runs if x["valid"]]
    best = dict(max(valid, key=lambda x: x["tok_s"])) if valid else {**runs[0], "tok_s": float("nan")}
    if not valid:
        for key in ("tokens", "wall_s", "ttft_p50", "ttft_p95", "itl_p50"):
            best[key] = float("nan")
    best["rounds_tok_s"] = [x["tok_s"] if x["valid"] else float("nan") for x in runs]
    best["complete"] = min(x["complete"] for x in runs)
    best["valid_rounds"] = len(valid)
    best["rounds"] = len(runs)
    best["short"] = sum(x["short"] for x in runs)
    best["errors"] = [e for x in runs for e in x["errors"]][:3]
    return best


def chat_request(model: str, messages: list[dict[str, str]], max_tokens: int, usage: bool) -> Request:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return Request(CHAT_PATH, body)


async def spec_counters(url: str) -> tuple[float, float]:
    """pykaito's draft and accepted token totals from /metrics (zeros where the server has none)."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url + "/metrics")
    found = {"draft": 0.0, "accepted": 0.0}
    if response.status_code == 200:
        for line in response.text.splitlines():
            for key, name in (("draft", "draft_tokens"), ("accepted", "accepted_tokens")):
                if line.startswith(f"vllm:spec_decode_num_{name}_total{{"):
                    found[key] = float(line.rsplit(" ", 1)[1])
    return found["draft"], found["accepted"]


def copy_messages(workload: str, tag: str = "") -> list[dict[str, str]]:
    """A copy-heavy chat; with a ``tag``, its first message starts with it, so no server saw it before."""
    messages = [dict(m) for m in COPY_WORKLOADS[workload]]
    if tag:
        messages[0]["content"] = f"(Request {tag}.) {messages[0]['content']}"
    return messages


async def copy_run(
    endpoint: Endpoint,
    server: Running,
    model: str,
    workload: str,
    max_tokens: int,
    usage: bool,
    tag: str = "",
) -> dict[str, Any]:
    """One copy-heavy chat, single stream: output tokens per second of its whole duration."""
    before = await spec_counters(server.url) if server.name.startswith("pykaito") else (0.0, 0.0)
    request = chat_request(model, copy_messages(workload, tag), max_tokens, usage)
    sample, _ = await send(endpoint, request, asyncio.get_running_loop().time())
    after = await spec_counters(server.url) if server.name.startswith("pykaito") else (0.0, 0.0)
    duration = sample.end - sample.start
    return {
        "tokens": sample.output_tokens,
        "tok_s": sample.output_tokens / duration
        if sample.ok and duration > 0 and sample.output_tokens
        else float("nan"),
        "draft_tokens": after[0] - before[0],
        "accepted_tokens": after[1] - before[1],
        "error": sample.error,
    }


async def copy_workloads(
    servers: dict[str, Running],
    endpoints: dict[str, Endpoint],
    setup: dict[str, tuple[str, bool]],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Every copy-heavy workload on every server in turn, ``args.rounds`` times (order rotated).

    With ``--copy-unseen`` each round's chats start with a tag of their own, so no server has seen
    them (no cached prompt, no remembered reply): the figures of text met for the first time.
    Otherwise every round repeats the same chats, as a user asking again does.
    """
    names = list(servers)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {w: [] for w in COPY_WORKLOADS} for n in names}
    for r in range(args.rounds):
        for workload in COPY_WORKLOADS:
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                model, usage = setup[name]
                tag = f"{r + 1}-{args.copy_seed}" if args.copy_unseen else ""
                t = await copy_run(
                    endpoints[name], servers[name], model, workload, args.copy_tokens, usage, tag
                )
                runs[name][workload].append(t)
                rate = (
                    f", accepted {t['accepted_tokens']:.0f}/{t['draft_tokens']:.0f}"
                    if t["draft_tokens"]
                    else ""
                )
                print(
                    f"  round {r + 1} {name:26s} {workload:15s}: {t['tok_s']:7.1f} tok/s, "
                    f"{t['tokens']} tokens{rate}",
                    flush=True,
                )
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = {}
        for workload, results in runs[name].items():
            best = max(results, key=lambda x: x["tok_s"] if x["tok_s"] == x["tok_s"] else -1.0)
            drafted = sum(x["draft_tokens"] for x in results)
            accepted = sum(x["accepted_tokens"] for x in results)
            out[name][workload] = {
                "tok_s": best["tok_s"],
                "tokens": best["tokens"],
                "rounds_tok_s": [x["tok_s"] for x in results],
                "acceptance_rate": accepted / drafted if drafted else None,
                "errors": [x["error"] for x in results if x["error"]][:3],
            }
    return out


async def mixed_ttft(endpoint: Endpoint, model: str, args: argparse.Namespace, usage: bool) -> dict[str, Any]:
    """Short-prompt TTFT alone, then while 7 other streams (3 of them with ~1000-token prompts) decode."""
    alone = []
    for i in range(args.probes):
        r = await stream_completion(
            endpoint, model, story_prompt("a quiet morning", f"alone-{i}"), 8, usage=usage
        )
        alone.append(r.ttft)
    started = [asyncio.Event() for _ in range(7)]
    prompts = [story_prompt(TOPICS[i], f"bg-{i}") for i in range(4)]
    prompts += [long_prompt(f"bg-long-{i}", args.long_paragraphs) for i in range(3)]
    background = [
        asyncio.create_task(
            stream_completion(endpoint, model, p, args.background_tokens, ev, usage=usage, exact=True)
        )
        for p, ev in zip(prompts, started, strict=True)
    ]
    loaded: list[float] = []
    all_decoding = True
    try:
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), args.background_wait)
        except TimeoutError:
            all_decoding = False
        for i in range(args.probes):
            if all(t.done() for t in background):
                break
            r = await asyncio.wait_for(
                stream_completion(
                    endpoint, model, story_prompt("a quiet morning", f"probe-{i}"), 8, usage=usage
                ),
                args.probe_timeout,
            )
            loaded.append(r.ttft)
    except TimeoutError:
        loaded.append(float("inf"))
    finally:
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    still_decoding = sum(1 for e in started if e.is_set())
    return {
        "alone_p50": pct(alone, 0.5),
        "alone_p95": pct(alone, 0.95),
        "loaded_p50": pct(loaded, 0.5),
        "loaded_p95": pct(loaded, 0.95),
        "probes": len(loaded),
        "background_decoding": still_decoding,
        "all_background_decoding": all_decoding,
        "ratio_p95_to_alone_p50": pct(loaded, 0.95) / pct(alone, 0.5),
    }


async def prepare(endpoint: Endpoint, server: Running) -> tuple[str, bool]:
    """The served model's name and whether the server reports usage while streaming (warms it up too)."""
    async with httpx.AsyncClient(timeout=60) as client:
        models = (await client.get(server.url + "/v1/models")).json()
    model = str(models["data"][0]["id"])
    return model, await detect_usage(endpoint, model)


def paired_ratios(rounds: list[float], base: list[float]) -> list[float]:
    """Round-by-round ratios of a server's tokens/s to the baseline's in the same round."""
    return [a / b for a, b in zip(rounds, base, strict=False) if b > 0 and a == a]


def median(values: list[float]) -> float:
    return pct(values, 0.5)


async def run_workloads(servers: dict[str, Running], args: argparse.Namespace) -> dict[str, Any]:
    """Every round runs each concurrency on every server in turn (order rotated per round).

    Interleaving puts the servers side by side under the same machine conditions; a shared
    machine's speed drifts by more than the differences being measured, so servers run one
    after the other for minutes would compare the drift, not the servers.
    """
    names = list(servers)
    endpoints = {name: Endpoint(servers[name].url, timeout_s=args.request_timeout) for name in names}
    try:
        setup = {name: await prepare(endpoints[name], servers[name]) for name in names}
        rounds: dict[str, dict[int, list[dict[str, Any]]]] = {
            name: {n: [] for n in args.concurrency} for name in names
        }
        copies = await copy_workloads(servers, endpoints, setup, args) if args.copy else {}
        for r in range(0 if args.skip_throughput else args.rounds):
            for n in args.concurrency:
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    model, usage = setup[name]
                    t = await throughput(endpoints[name], model, n, args.max_tokens, f"c{n}-r{r}", usage)
                    rounds[name][n].append(t)
                    flag = "" if t["valid"] else f"  INVALID ({t['short']} short, {t['errors'][:1]})"
                    print(
                        f"  round {r + 1} {name:17s} c={n}: {t['tok_s']:7.1f} tok/s"
                        f"  complete {t['complete']}/{n}"
                        f"  ttft p50 {t['ttft_p50'] * 1000:6.0f} ms  itl p50 {t['itl_p50'] * 1000:5.1f} ms"
                        f"{flag}",
                        flush=True,
                    )
        results: dict[str, Any] = {}
        for name in names:
            out: dict[str, Any] = {"usage_reported": setup[name][1], "throughput": {}}
            for n in args.concurrency:
                runs = rounds[name][n]
                if not runs:
                    continue
                out["throughput"][str(n)] = summarize_rounds(runs)
            out["peak_rss_after_throughput_mib"] = servers[name].peak_rss_mib()
            if copies:
                out["copy"] = copies[name]
            results[name] = out
        for name in names:
            out = results[name]
            if name in args.skip_mixed:
                out["mixed"] = None
            else:
                model, usage = setup[name]
                out["mixed"] = m = await mixed_ttft(endpoints[name], model, args, usage)
                print(
                    f"  {name:17s} short-prompt TTFT alone p50 {m['alone_p50'] * 1000:.0f} ms, "
                    f"under load p95 {m['loaded_p95'] * 1000:.0f} ms ({m['ratio_p95_to_alone_p50']:.2f}x)",
                    flush=True,
                )
            out["peak_rss_mib"] = servers[name].peak_rss_mib()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    return results


# -- report ------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 1, scale: float = 1.0) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v * scale:.{digits}f}"


def times(r: float) -> str:
    """A ratio as ``1.23x``; ``n/a`` when there is none."""
    return "n/a" if r != r else f"{r:.2f}x"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def paired_median(results: dict[str, Any], name: str, base: str, n: str) -> float:
    """Median over rounds of name's tokens/s over base's in the same round (NaN if one is missing)."""
    ours = results.get(name, {}).get("throughput", {}).get(n, {}).get("rounds_tok_s")
    theirs = results.get(base, {}).get("throughput", {}).get(n, {}).get("rounds_tok_s")
    if not ours or not theirs:
        return float("nan")
    return median(paired_ratios(ours, theirs))


def copy_report(results: dict[str, Any], unseen: bool = False) -> list[str]:
    """The copy-heavy table: each server's best round, and ratios (median over rounds, paired)."""
    with_copy = {name: res["copy"] for name, res in results.items() if res.get("copy")}
    if not with_copy:
        return []
    seen = (
        "each round's chats new to every server"
        if unseen
        else "the same chats every round, so a server may remember an earlier round's reply"
    )
    lines = [
        "",
        f"Copy-heavy chats, one stream, temperature 0, {seen} (tok/s of the whole reply, best round; "
        "ratios are medians over rounds of the ratio within a round):",
        "",
        "| workload | server | tok/s | vs best llama-server | vs llama-server default | vs pykaito-spec-off "
        "| acceptance rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in COPY_WORKLOADS:
        llama = {n: c[workload] for n, c in with_copy.items() if n.startswith("llama-server")}
        best_llama = max(llama, key=lambda n: llama[n]["tok_s"], default=None)

        def vs(name: str, base: str | None, workload: str = workload, best: str | None = best_llama) -> str:
            if base is None or base not in with_copy:
                return "n/a"
            r = median(
                paired_ratios(
                    with_copy[name][workload]["rounds_tok_s"], with_copy[base][workload]["rounds_tok_s"]
                )
            )
            return f"{fmt(r, 2)}x ({base})" if base == best else f"{fmt(r, 2)}x"

        for name, copies in with_copy.items():
            c = copies[workload]
            acc = c.get("acceptance_rate")
            lines.append(
                f"| {workload} | {name} | {fmt(c['tok_s'])} | {vs(name, best_llama)} "
                f"| {vs(name, 'llama-server')} "
                f"| {vs(name, 'pykaito-spec-off')} | {'n/a' if acc is None else f'{100 * acc:.0f}%'} |"
            )
    return lines


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# Serving benchmark {meta['date']}",
        "",
        f"Model `{meta['model']}`, {meta['threads']} threads, --parallel {meta['parallel']}, "
        f"context {meta['ctx']} tokens, {meta['max_tokens']} output tokens per request at temperature 0, "
        f"{meta['rounds']} rounds; in each round every server runs each workload in turn (order rotated). "
        "tok/s and latencies are from each server's best valid round (a valid round: every stream "
        f'completed with all {meta["max_tokens"]} tokens); "vs llama-server" is the median over '
        "rounds of the ratio within a round, over rounds valid for both. "
        f"Machine: {meta['machine']}. Timings on a shared machine vary run to run: "
        "compare within one run only.",
        "",
        "| server | streams | complete | valid rounds | total tok/s | vs llama-server "
        "| TTFT p50 ms | TTFT p95 ms | ITL p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = results.get("llama-server", {}).get("throughput", {})
    for name, res in results.items():
        if "error" in res:
            lines.append(f"| {name} | failed: {res['error']} | | | | | | | |")
            continue
        for n, t in res["throughput"].items():
            r = paired_median(results, name, "llama-server", n)
            lines.append(
                f"| {name} | {n} | {t['complete']}/{n} | {t['valid_rounds']}/{t['rounds']} "
                f"| {fmt(t['tok_s'])} | {times(r)} | "
                f"{fmt(t['ttft_p50'], 0, 1000)} | {fmt(t['ttft_p95'], 0, 1000)} "
                f"| {fmt(t['itl_p50'], 1, 1000)} |"
            )
    lines += copy_report(results, bool(meta.get("copy_unseen")))
    lines += [
        "",
        "Short-prompt TTFT while 7 streams decode (4 short prompts, 3 with ~1000-token prompts):",
        "",
        "| server | alone p50 ms | loaded p50 ms | loaded p95 ms | loaded p95 / alone p50 |",
        "|---|---|---|---|---|",
    ]
    for name, res in results.items():
        m = res.get("mixed")
        if not m:
            lines.append(f"| {name} | skipped | | | |")
            continue
        lines.append(
            f"| {name} | {fmt(m['alone_p50'], 0, 1000)} | {fmt(m['loaded_p50'], 0, 1000)} | "
            f"{fmt(m['loaded_p95'], 0, 1000)} | {fmt(m['ratio_p95_to_alone_p50'], 2)}x |"
        )
    base_rss = results.get("llama-server", {}).get("peak_rss_mib")
    lines += ["", "| server | peak RSS MiB | vs llama-server |", "|---|---|---|"]
    for name, res in results.items():
        rss = res.get("peak_rss_mib")
        lines.append(f"| {name} | {fmt(rss, 0)} | {ratio(rss, base_rss)} |")
    ours = results.get("pykaito", {})
    if "throughput" in ours and base:
        t = ours["throughput"]

        def vs(base: str, n: str) -> float:
            return paired_median(results, "pykaito", base, n)

        targets = [
            ("single stream >= 0.9x llama-server", vs("llama-server", "1"), 0.9),
            ("8 streams >= 1.0x llama-server", vs("llama-server", "8"), 1.0),
            ("8 streams >= 2x llama-cpp-python", vs(LLAMA_CPP_PYTHON, "8"), 2.0),
        ]
        lines += ["", "Targets:", ""]
        for label, r, goal in targets:
            if r != r:
                lines.append(f"- {label}: n/a")
            else:
                lines.append(f"- {label}: {r:.2f}x ({'met' if r >= goal else 'missed'})")
        m = ours.get("mixed")
        if m:
            r = m["ratio_p95_to_alone_p50"]
            lines.append(
                f"- short-prompt TTFT p95 under load < 4x alone: {r:.2f}x ({'met' if r < 4 else 'missed'})"
            )
        rss, brss = ours.get("peak_rss_mib"), base_rss
        if rss and brss:
            verdict = "met" if rss / brss <= 1.3 else "missed"
            lines.append(f"- peak RSS <= 1.3x llama-server: {rss / brss:.2f}x ({verdict})")
        eight = t.get("8", {})
        lines.append(f"- every stream complete at 8: {eight.get('complete')}/8")
    return "\n".join(lines) + "\n"


def main_bench(args: argparse.Namespace) -> int:
    args.model = Path(args.model) if args.model else embedded_model()
    args.threads = args.threads or physical_cores()
    results_dir = Path(args.out)
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    log_dir = results_dir / f"{stamp}-logs"
    log_dir.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Running] = {}
        for name in args.servers:
            if VARIANTS.get(name, (name,))[0] == "llama-server" and not Path(args.llama_server).is_file():
                results[name] = {"error": f"{args.llama_server} is missing: run bench/setup_llama_server.sh"}
                print(f"{name}: skipped ({results[name]['error']})", flush=True)
                continue
            print(f"{name}: starting", flush=True)
            try:
                servers[name] = stack.enter_context(running_server(name, args, log_dir))
            except Exception as exc:  # a failing server is a row in the report, not the end of the run
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{name}: failed: {exc}", flush=True)
        if servers:
            results.update(asyncio.run(run_workloads(servers, args)))
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": args.model.name,
        "threads": args.threads,
        "parallel": args.parallel,
        "ctx": args.ctx,
        "max_tokens": args.max_tokens,
        "copy_unseen": args.copy_unseen,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "argv": sys.argv[1:],
    }
    md = report(results, meta)
    print()
    print(md)
    (results_dir / f"{stamp}.md").write_text(md)
    (results_dir / f"{stamp}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    )
    print(f"wrote {results_dir / f'{stamp}.md'} and .json")
    return 0


def serve_pykaito(args: argparse.Namespace) -> int:
    """Run pykaito's server with the llama.cpp engine (what ``pykaito-runtime llamacpp`` does)."""
    sys.path.insert(0, str(ROOT / "src"))
    from pykaito.runtime.serve import llamacpp_engine, serve
    from pykaito.runtime.settings import ServerSettings

    engine = llamacpp_engine(
        Path(args.model),
        parallel=args.parallel,
        threads=args.threads,
        ctx_size=args.ctx,
        max_queue=64,
        speculative=args.speculative,
    )
    serve(engine, ServerSettings(host="127.0.0.1", port=args.port, log_level="warning"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    ours = sub.add_parser("serve-pykaito", help="run pykaito's server (used by the benchmark itself)")
    ours.add_argument("--model", required=True)
    ours.add_argument("--port", type=int, required=True)
    ours.add_argument("--threads", type=int, default=0)
    ours.add_argument("--parallel", type=int, default=8)
    ours.add_argument("--ctx", type=int, default=0)
    ours.add_argument("--speculative", choices=("off", "ngram"), default="ngram")
    parser.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS))
    parser.add_argument("--model", default="", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=0, help="0: physical cores available")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=8 * 2048, help="context of all slots together")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probes", type=int, default=6)
    parser.add_argument("--background-tokens", type=int, default=400)
    parser.add_argument("--background-wait", type=float, default=60.0)
    parser.add_argument("--probe-timeout", type=float, default=60.0)
    parser.add_argument("--long-paragraphs", type=int, default=17, help="~58 tokens each")
    parser.add_argument("--skip-mixed", type=lambda s: s.split(","), default=["llama-cpp-python"])
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--llama-server", default=str(LLAMA_SERVER))
    parser.add_argument("--copy", action="store_true", help="also run the copy-heavy chat workloads")
    parser.add_argument("--copy-tokens", type=int, default=256, help="max_tokens of a copy-heavy reply")
    parser.add_argument(
        "--copy-unseen", action="store_true", help="tag each round's copy-heavy chats so no server saw them"
    )
    parser.add_argument("--copy-seed", default=str(os.getpid()), help="part of --copy-unseen's tags")
    parser.add_argument("--skip-throughput", action="store_true", help="only the copy-heavy workloads")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.command == "serve-pykaito":
        return serve_pykaito(args)
    return main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
