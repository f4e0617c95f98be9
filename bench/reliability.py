"""The reliability suite: a real server on 127.0.0.1 put through fuzzing, abuse and overload.

    .venv/bin/python bench/reliability.py             # the full run (>= 10,000 fuzzed requests)
    .venv/bin/python bench/reliability.py --short     # the few-second version that `make test` runs
    .venv/bin/python bench/reliability.py --only fuzz,overflow

It starts ``pykaito-runtime llamacpp`` with the embedded model as a child process on a free port
of 127.0.0.1 (nothing else is contacted), runs the registered checks one after another, prints one
table of figures and exits non-zero when any check found a 5xx, a hang, a leak or a loss.

Checks are functions registered with ``@check("name")``; each gets a ``Context`` (the server's
URL, key and limits, and the run's scale) and returns a ``Result`` with its figures and problems.
Suites kept elsewhere register theirs the same way: every ``bench/reliability_*.py`` module is
imported at start, and ``@check(..., server=False)`` marks a check that needs no inference server
(a history writer killed with SIGKILL, the operator kill loop).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
KEY = "reliability-key"
REQUEST_TIMEOUT_S = 120.0  # a request unanswered after this long is a hang


# ---------------------------------------------------------------- registration


@dataclass
class Result:
    """What one check measured: figures for the table, and problems (any problem fails the run)."""

    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


@dataclass(frozen=True)
class Context:
    """What a check may use: the server, and how hard to push (``short`` for `make test`)."""

    url: str
    key: str
    parallel: int
    max_queue: int
    header_timeout_s: float
    short: bool
    fuzz_cases: int
    server_pid: int

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=REQUEST_TIMEOUT_S, **kwargs)


CheckFn = Callable[[Context], Result]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFn
    server: bool = True  # needs the inference server


CHECKS: dict[str, Check] = {}
# Suites in bench/reliability_*.py register with ``from reliability import check``: this module,
# however it was started (a script, or loaded by the tests under another name).
sys.modules.setdefault("reliability", sys.modules[__name__])


def check(name: str, *, server: bool = True) -> Callable[[CheckFn], CheckFn]:
    """Register a check under ``name`` (the registration point for checks kept in other modules)."""

    def register(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"a reliability check named {name!r} is registered already")
        CHECKS[name] = Check(name, fn, server)
        return fn

    return register


def load_other_suites() -> None:
    """Import every ``bench/reliability_*.py``: each registers its checks with ``@check``."""
    for path in sorted(HERE.glob("reliability_*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        if spec is None or spec.loader is None or spec.name in sys.modules:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(url: str, name: str) -> float:
    """A gauge's value (summed over its labels) from the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)", line)
        if match:
            total += float(match.group(1))
    return total


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def running_server(*, parallel: int, max_queue: int, header_timeout_s: float) -> Iterator[tuple[str, int]]:
    """``pykaito-runtime llamacpp`` with the embedded model on a free 127.0.0.1 port, ready to answer."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key"
        key_file.write_text(KEY + "\n")
        log = (Path(tmp) / "server.log").open("w")
        command = [
            sys.executable, "-m", "pykaito.runtime.entry", "llamacpp", "--model", "embedded",
            "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel),
            "--max-queue", str(max_queue), "--threads", "1", "--ctx-size", str(parallel * 512),
            "--max-body-bytes", str(256 * 1024), "--api-key-file", str(key_file),
            "--header-timeout", str(header_timeout_s), "--body-timeout", str(header_timeout_s),
            "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    log.flush()
                    raise RuntimeError(
                        f"the server exited with {proc.returncode}: {(Path(tmp) / 'server.log').read_text()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not become ready within 180 s")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            server_log = (Path(tmp) / "server.log").read_text()
            tracebacks = server_log.count("Traceback")
            if tracebacks:
                print(f"the server logged {tracebacks} traceback(s):\n{server_log[-4000:]}", file=sys.stderr)


def drained(ctx: Context, result: Result, within: float = 60.0) -> None:
    """Running and waiting requests back to 0 (a leak otherwise)."""
    deadline = time.monotonic() + within
    while True:
        running = metric(ctx.url, "vllm:num_requests_running")
        waiting = metric(ctx.url, "vllm:num_requests_waiting")
        if running == 0 and waiting == 0:
            return
        if time.monotonic() > deadline:
            result.fail(
                f"slots did not drain: {running:g} running and {waiting:g} waiting after {within:g} s"
            )
            return
        time.sleep(0.05)


def count_statuses(result: Result, statuses: Counter[int]) -> None:
    result.figures["statuses"] = " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))
    fives = sum(n for s, n in statuses.items() if s >= 500)
    result.figures["5xx"] = fives
    if fives:
        result.fail(f"{fives} response(s) with a 5xx status")


# ---------------------------------------------------------------- checks


CHAT_OK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}


def draw_cases(strategy: Any, count: int, *, derandomize: bool) -> list[Any]:
    """Up to ``count`` cases drawn by hypothesis (fewer when the strategy has fewer distinct values)."""
    import hypothesis

    drawn: list[Any] = []

    @hypothesis.settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=derandomize,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(strategy)
    def draw(case: Any) -> None:
        drawn.append(case)

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # nothing to draw: no input to vary
        draw()
    return drawn


FUZZ_MAX_TOKENS = 8


def cap_generation(case: Any) -> None:
    """Keep a generated body's reply short; what is not a positive integer stays as generated."""
    body = getattr(case, "body", None)
    if not isinstance(body, dict) or case.operation.path not in ("/v1/chat/completions", "/v1/completions"):
        return
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None or (
            isinstance(value, int) and not isinstance(value, bool) and value > FUZZ_MAX_TOKENS
        ):
            body[name] = FUZZ_MAX_TOKENS


@check("openapi-fuzz")
def fuzz(ctx: Context) -> Result:
    """schemathesis: bodies built from /openapi.json, valid and invalid, against every operation.

    Generated replies are capped at ``FUZZ_MAX_TOKENS`` tokens (a valid body may ask for the whole
    context), so that thousands of cases take minutes, not hours.
    """
    import schemathesis
    from schemathesis import GenerationMode

    result = Result()
    schema = schemathesis.openapi.from_url(ctx.url + "/openapi.json", headers=ctx.auth)
    operations = [op.ok() for op in schema.get_all_operations()]
    posts = [op for op in operations if op.method.upper() == "POST"]
    gets = [op for op in operations if op.method.upper() != "POST"]
    per_post = max(1, -(-ctx.fuzz_cases // (2 * len(posts)))) if posts else 0
    cases: list[Any] = []
    drawing = time.monotonic()
    for op in operations:
        modes = (
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op in posts else (GenerationMode.POSITIVE,)
        )
        for mode in modes:
            wanted = per_post if op in posts else 5
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cases.extend(draw_cases(op.as_strategy(generation_mode=mode), wanted, derandomize=ctx.short))
    result.figures["operations"] = f"{len(posts)} POST, {len(gets)} GET"
    result.figures["drawing s"] = round(time.monotonic() - drawing, 1)
    statuses: Counter[int] = Counter()
    hangs = 0
    lock = threading.Lock()
    session_local = threading.local()
    sessions: list[Any] = []

    def call(case: Any) -> None:
        nonlocal hangs
        cap_generation(case)
        session = getattr(session_local, "session", None)
        if session is None:
            import requests

            session = session_local.session = requests.Session()
            with lock:
                sessions.append(session)
        try:
            response = case.call(
                base_url=ctx.url, session=session, headers=ctx.auth, timeout=REQUEST_TIMEOUT_S
            )
        except Exception as exc:  # a transport failure: the server hung or dropped the connection
            with lock:
                hangs += 1
                if hangs <= 3:
                    result.fail(f"{case.operation.label}: no answer ({type(exc).__name__}: {exc})")
            return
        with lock:
            statuses[response.status_code] += 1
            if response.status_code >= 500 and statuses[response.status_code] <= 3:
                result.fail(f"{case.operation.label} answered {response.status_code}: {response.text[:300]}")

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(ctx.parallel) as pool:
            list(pool.map(call, cases))
    finally:
        for session in sessions:
            session.close()
    elapsed = time.monotonic() - started
    result.figures["cases"] = sum(statuses.values()) + hangs
    result.figures["cases/s"] = round(result.figures["cases"] / elapsed, 1)
    result.figures["no answer"] = hangs
    count_statuses(result, statuses)
    if result.figures["cases"] < ctx.fuzz_cases:
        result.fail(f"only {result.figures['cases']} cases ran; at least {ctx.fuzz_cases} wanted")
    drained(ctx, result)
    return result


def malformed_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) requests a client gets wrong; each must get a 4xx."""
    js = {"content-type": "application/json"}
    chat = "/v1/chat/completions"
    user = [{"role": "user", "content": "x"}]

    def body(**fields: Any) -> bytes:
        return json.dumps({"messages": user, "max_tokens": 2, **fields}).encode()

    def schema(value: Any) -> bytes:
        return body(response_format={"type": "json_schema", "json_schema": {"schema": value}})

    bad_call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    image = {"type": "image_url", "image_url": {"url": "x"}}

    cases: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", chat, js, b""),
        ("POST", chat, js, b"{"),
        ("POST", chat, js, b"null"),
        ("POST", chat, js, b"[]"),
        ("POST", chat, js, b'"text"'),
        ("POST", chat, js, b"\xff\xfe\x00"),
        ("POST", chat, js, b"[" * 50_000 + b"]" * 50_000),
        ("POST", chat, js, b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("POST", chat, js, b'{"max_tokens": ' + b"9" * 5000 + b"}"),
        ("POST", chat, js, body(max_tokens=float("nan"))),
        ("POST", chat, js, b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}'),
        ("POST", chat, js, b'{"messages": [{"role": "user", "content": "a\\u0000b"}], "max_tokens": 300000}'),
        ("POST", chat, js, body(stream="yes")),
        ("POST", chat, js, body(max_tokens="10")),
        ("POST", chat, js, body(temperature=5)),
        ("POST", chat, js, body(top_p=0)),
        ("POST", chat, js, body(top_logprobs=21, logprobs=True)),
        ("POST", chat, js, body(n=2)),
        ("POST", chat, js, body(seed=2**80)),
        ("POST", chat, js, body(stop=[""])),
        ("POST", chat, js, schema({"type": "wat"})),
        ("POST", chat, js, schema({"type": "string", "minLength": 10**9})),
        ("POST", chat, js, schema({"$ref": "http://127.0.0.1:1/x"})),
        ("POST", chat, js, body(tools=[{"type": "function", "function": {"name": "f"}}])),
        ("POST", chat, js, body(tool_choice="required")),
        ("POST", chat, js, body(functions=[{"name": "f"}])),
        ("POST", chat, js, body(messages=[*user, {"role": "assistant", "tool_calls": [bad_call]}])),
        ("POST", chat, js, body(messages=[{"role": "tool", "content": "x"}])),
        ("POST", chat, js, body(messages=[{"role": "wizard", "content": "x"}])),
        ("POST", chat, js, body(messages=[{"role": "user", "content": [image]}])),
        ("POST", chat, js, body(messages=[{"role": "user", "content": "x" * 200_000}])),
        ("POST", chat, js, body(model="no-such-model")),
        ("POST", chat, {"content-type": "text/plain"}, body()),
        ("POST", chat, {"content-type": "application/x-www-form-urlencoded"}, b"messages=x"),
        ("POST", chat, {}, body()),
        ("POST", chat, js, b"{" + b" " * (300 * 1024) + b"}"),
        ("POST", "/v1/completions", js, b'{"prompt": [[false]]}'),
        ("POST", "/v1/completions", js, b'{"prompt": [99999999]}'),
        ("POST", "/v1/completions", js, b'{"prompt": ["a", "b"]}'),
        ("POST", "/v1/completions", js, b'{"prompt": "x", "echo": true, "logprobs": 2}'),
        ("POST", "/v1/completions", js, b'{"prompt": ""}'),
        ("POST", "/v1/completions", js, b'{"prompt": [-1]}'),
        ("POST", "/tokenize", js, b"{}"),
        ("POST", "/tokenize", js, b'{"prompt": "x", "messages": []}'),
        ("POST", "/detokenize", js, b'{"tokens": [true]}'),
        ("POST", "/detokenize", js, b'{"tokens": [2147483647]}'),
        ("GET", chat, {}, b""),
        ("PUT", "/v1/models", js, b"{}"),
        ("DELETE", "/v1/models", {}, b""),
        ("GET", "/nowhere", {}, b""),
    ]  # fmt: skip
    return cases


@check("malformed")
def malformed(ctx: Context) -> Result:
    """Hand-made requests a client gets wrong: each must get a 4xx, and the server must keep answering."""
    result = Result()
    statuses: Counter[int] = Counter()
    with ctx.client() as client:
        for method, path, headers, body in malformed_requests():
            try:
                response = client.request(method, path, headers=headers, content=body)
            except httpx.HTTPError as exc:
                result.fail(f"{method} {path}: no answer ({exc})")
                continue
            statuses[response.status_code] += 1
            if not 400 <= response.status_code < 500:
                result.fail(
                    f"{method} {path} {body[:60]!r} answered {response.status_code}: {response.text[:200]}"
                )
        unauthorised = httpx.post(ctx.url + "/v1/chat/completions", json=CHAT_OK, timeout=30)
        statuses[unauthorised.status_code] += 1
        if unauthorised.status_code != 401:
            result.fail(f"a request without the key answered {unauthorised.status_code}")
        ok = client.post("/v1/chat/completions", json=CHAT_OK)
        if ok.status_code != 200:
            result.fail(f"a good request after the malformed ones answered {ok.status_code}")
    result.figures["requests"] = sum(statuses.values())
    count_statuses(result, statuses)
    drained(ctx, result)
    return result


@check("disconnects")
def disconnects(ctx: Context) -> Result:
    """Many streams at once, half of them cut off after their first chunk: the rest finish, slots drain."""
    result = Result()
    streams = 16 if ctx.short else 64
    finished: Counter[str] = Counter()
    lock = threading.Lock()

    def stream(i: int) -> None:
        leave = i % 2 == 0
        body = {**CHAT_OK, "max_tokens": 12 if ctx.short else 48, "stream": True}
        try:
            with (
                httpx.Client(base_url=ctx.url, headers=ctx.auth, timeout=REQUEST_TIMEOUT_S) as client,
                client.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                if response.status_code == 429:
                    outcome = "429"
                elif response.status_code != 200:
                    outcome = f"status {response.status_code}"
                else:
                    outcome = "no finish"
                    for line in response.iter_lines():
                        if leave:
                            outcome = "left"
                            break
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            if "error" in chunk:
                                outcome = f"error event: {chunk['error'].get('message', '')[:80]}"
                            elif chunk["choices"] and chunk["choices"][0].get("finish_reason"):
                                outcome = "finished"
        except httpx.HTTPError as exc:
            outcome = f"error {type(exc).__name__}"
        with lock:
            finished[outcome] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(stream, range(streams)))
    result.figures["streams"] = streams
    result.figures["outcomes"] = " ".join(f"{k}:{v}" for k, v in sorted(finished.items()))
    bad = {k: v for k, v in finished.items() if k not in ("left", "finished", "429")}
    if bad:
        result.fail(f"streams ended badly: {bad}")
    drained(ctx, result)
    result.figures["drained after s"] = round(time.monotonic() - started, 1)
    return result


@check("overflow")
def overflow(ctx: Context) -> Result:
    """More concurrent requests than slots and queue: the extra get 429 with Retry-After, nothing else."""
    result = Result()
    total = ctx.parallel + ctx.max_queue + (16 if ctx.short else 48)  # full run: 120 over a limit of 72
    statuses: Counter[int] = Counter()
    no_retry_after = 0
    lock = threading.Lock()
    gate = threading.Barrier(total)

    def post(_: int) -> None:
        nonlocal no_retry_after
        with httpx.Client(base_url=ctx.url, headers=ctx.auth, timeout=REQUEST_TIMEOUT_S) as client:
            gate.wait()
            try:
                response = client.post(
                    "/v1/chat/completions", json={**CHAT_OK, "max_tokens": 8 if ctx.short else 24}
                )
            except httpx.HTTPError as exc:
                with lock:
                    result.fail(f"no answer: {exc}")
                return
        with lock:
            statuses[response.status_code] += 1
            if response.status_code == 429 and not response.headers.get("retry-after"):
                no_retry_after += 1

    with ThreadPoolExecutor(total) as pool:
        list(pool.map(post, range(total)))
    result.figures["requests"] = total
    count_statuses(result, statuses)
    others = {s: n for s, n in statuses.items() if s not in (200, 429)}
    if others:
        result.fail(f"statuses other than 200 and 429: {others}")
    if not statuses[429]:
        result.fail(f"{total} concurrent requests over a limit of {ctx.parallel + ctx.max_queue} got no 429")
    if no_retry_after:
        result.fail(f"{no_retry_after} 429(s) without Retry-After")
    drained(ctx, result)
    return result


@check("slow-clients")
def slow_clients(ctx: Context) -> Result:
    """Connections that send their head a byte at a time, or a body that never ends, are cut off."""
    result = Result()
    count = 8 if ctx.short else 32
    host, port = ctx.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]
    started = time.monotonic()
    limit = ctx.header_timeout_s + 15
    open_ = set(range(count))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    step = 0
    served_meanwhile = 0
    while open_ and time.monotonic() - started < limit:
        for i in list(open_):
            try:
                socks[i].sendall(head[step % len(head) : step % len(head) + 1])
            except OSError:
                open_.discard(i)
        step += 1
        if step % 4 == 0:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ctx.url + "/health", timeout=10).status_code == 200:
                    served_meanwhile += 1
        time.sleep(0.25)
    cut_after = time.monotonic() - started
    for sock in socks:
        sock.close()
    result.figures["slowloris connections"] = count
    result.figures["still open"] = len(open_)
    result.figures["cut after s"] = round(cut_after, 1)
    result.figures["health answers meanwhile"] = served_meanwhile
    if open_:
        result.fail(f"{len(open_)} slow connection(s) still open after {limit:g} s")
    if not served_meanwhile:
        result.fail("the server did not answer /health while slow clients held connections")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ctx.key}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n{"
        )
        sock.settimeout(limit)
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            answer = b""
    result.figures["slow body"] = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "no answer"
    if not answer.startswith(b"HTTP/1.1 408"):
        result.fail(f"a slow body got {answer[:80]!r}, not 408")
    return result


@check("memory")
def memory(ctx: Context) -> Result:
    """The server's resident memory after everything else (a figure; a leak shows as growth run to run)."""
    result = Result()
    result.figures["server RSS MiB"] = round(rss_kib(ctx.server_pid) / 1024, 1)
    if httpx.get(ctx.url + "/health", timeout=30).status_code != 200:
        result.fail("the server is not healthy at the end")
    return result


# ---------------------------------------------------------------- running


@dataclass
class Row:
    name: str
    seconds: float
    result: Result


def run(names: list[str] | None = None, *, short: bool = False, fuzz_cases: int | None = None) -> list[Row]:
    """Run the checks (all, or those named) and return one row each."""
    load_other_suites()
    chosen = [CHECKS[n] for n in names] if names else list(CHECKS.values())
    parallel, max_queue, header_timeout = (4, 12, 2.0) if short else (8, 64, 5.0)
    cases = fuzz_cases if fuzz_cases is not None else (100 if short else 10_000)
    rows: list[Row] = []

    def timed(item: Check, ctx: Context) -> None:
        started = time.monotonic()
        try:
            result = item.run(ctx)
        except Exception as exc:
            result = Result(problems=[f"the check itself failed: {type(exc).__name__}: {exc}"])
        rows.append(Row(item.name, time.monotonic() - started, result))

    offline = [c for c in chosen if not c.server]
    online = [c for c in chosen if c.server]
    for item in offline:
        ctx = Context("", "", 0, 0, 0.0, short, cases, 0)
        timed(item, ctx)
    if online:
        with running_server(parallel=parallel, max_queue=max_queue, header_timeout_s=header_timeout) as (
            url,
            pid,
        ):
            ctx = Context(url, KEY, parallel, max_queue, header_timeout, short, cases, pid)
            for item in online:
                timed(item, ctx)
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'check':<16} {'result':<6} {'s':>6}  figures"]
    for row in rows:
        status = "ok" if not row.result.problems else "FAIL"
        figures = ", ".join(f"{k}={v}" for k, v in row.result.figures.items())
        lines.append(f"{row.name:<16} {status:<6} {row.seconds:>6.1f}  {figures}")
        lines.extend(f"{'':<31}! {p}" for p in row.result.problems)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="small counts: what `make test` runs")
    parser.add_argument("--only", default="", help="comma-separated check names")
    parser.add_argument(
        "--fuzz-cases", type=int, default=None, help="fuzzed requests (default 10000, short 100)"
    )
    parser.add_argument("--list", action="store_true", help="list the registered checks")
    args = parser.parse_args(argv)
    if args.list:
        load_other_suites()
        for item in CHECKS.values():
            print(f"{item.name:<16} {(item.run.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    load_other_suites()
    unknown = [n for n in names or [] if n not in CHECKS]
    if unknown:
        print(f"unknown check(s): {', '.join(unknown)}; --list shows them", file=sys.stderr)
        return 2
    rows = run(names, short=args.short, fuzz_cases=args.fuzz_cases)
    print(table(rows))
    failed = [r.name for r in rows if r.result.problems]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(f"all {len(rows)} checks passed")
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the server child is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
