"""bench/serve_compare.py and bench/bench_agreement.py: what a round measures and when it counts.

The throughput workload runs against an in-memory server on a virtual clock (tests/bench/virtual.py),
so its times are exact: a request that opens its connection inside the step is seen later by the
server by exactly the connection's set-up time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pykaito.bench import load
from pykaito.bench.load import Budget, Plan, Step
from pykaito.bench.prompts import Conversation, Workload
from pykaito.bench.samples import Sample
from pykaito.bench.sse import Endpoint, Opener
from tests.bench.virtual import memory_opener, run_virtual

pytestmark = pytest.mark.timeout(60)

BENCH = Path(__file__).resolve().parents[2] / "bench"
TTFT_S = 0.1
GAP_S = 0.01
CONNECT_S = 0.005
exact = pytest.approx


def _script(name: str) -> ModuleType:
    if name not in sys.modules:
        sys.path.insert(0, str(BENCH))  # bench_agreement imports serve_compare as a sibling
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sc = _script("serve_compare")
agreement = _script("bench_agreement")


def _event(obj: object) -> bytes:
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    """Answers each request ``TTFT_S`` after it arrived, then a token every ``GAP_S`` up to max_tokens
    (or ``natural`` tokens where the request does not ask to ignore end-of-sequence).

    With ``one_shot`` it closes each connection after one answer, as a server whose keep-alive
    timeout ran out between two steps.
    """

    def __init__(self, natural: int | None = None, one_shot: bool = False) -> None:
        self.natural = natural
        self.one_shot = one_shot
        self.bodies: list[dict[str, Any]] = []
        self.arrivals: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(x.split(b":")[1])
                    for x in head.split(b"\r\n")
                    if x.lower().startswith(b"content-length")
                )
                body = json.loads(await reader.readexactly(length))
                self.arrivals.append(asyncio.get_running_loop().time())
                self.bodies.append(body)
                await self.answer(writer, body)
                if self.one_shot:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        tokens = body["max_tokens"]
        if self.natural is not None and not body.get("ignore_eos"):
            tokens = min(tokens, self.natural)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await asyncio.sleep(TTFT_S)
        for i in range(tokens):
            if i:
                await asyncio.sleep(GAP_S)
            writer.write(_event({"choices": [{"index": 0, "text": f" t{i}"}]}))
        usage = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens}
        writer.write(_event({"choices": [], "usage": usage}))
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()


def slow_connect(server: Server) -> Opener:
    """In-memory connections that take ``CONNECT_S`` to set up, as a handshake and an accept do."""
    opener = memory_opener(server.handle)

    async def connect(factory: Any) -> Any:
        await asyncio.sleep(CONNECT_S)
        return await opener(factory)

    return connect


def run_throughput(server: Server, n: int, max_tokens: int, steps: int = 1, **kwargs: Any) -> list[Any]:
    async def go() -> list[Any]:
        endpoint = Endpoint("http://fake.invalid", opener=slow_connect(server))
        try:
            await sc.stream_completion(endpoint, "m", "warm-up", 2)  # leaves one idle connection
            return [
                await sc.throughput(endpoint, "m", n, max_tokens, f"s{i}", True, **kwargs)
                for i in range(steps)
            ]
        finally:
            endpoint.close()
            await asyncio.sleep(1)  # virtual time: the server sees its connections close

    return run_virtual(go())


def test_every_throughput_request_asks_for_exactly_max_tokens() -> None:
    # a server that would end every reply after 3 tokens (end of sequence) honours ignore_eos:
    # each stream then measures the 16 tokens asked for, and the round is valid
    server = Server(natural=3)
    (t,) = run_throughput(server, 4, 16)
    measured = server.bodies[1:]
    assert len(measured) == 4
    assert all(b["ignore_eos"] is True and b["min_tokens"] == 16 and b["max_tokens"] == 16 for b in measured)
    assert "ignore_eos" not in server.bodies[0]  # the warm-up asks for nothing special
    assert (t["complete"], t["short"], t["valid"], t["tokens_per_stream"]) == (4, 0, True, [16] * 4)


def test_the_steps_connections_are_open_before_its_clock_starts() -> None:
    # as in kaito bench: every request reaches the server at the same moment, and each TTFT is the
    # server's own; opened inside the step, 3 of 4 requests would carry the set-up of a connection
    server = Server()
    (t,) = run_throughput(server, 4, 5)
    assert t["ttfts"] == exact([TTFT_S] * 4)
    assert len(set(server.arrivals[1:])) == 1
    before = Server()
    (old,) = run_throughput(before, 4, 5, open_first=False)
    assert old["ttfts"] == exact([TTFT_S] + [TTFT_S + CONNECT_S] * 3)


def test_serve_compare_and_kaito_bench_measure_the_same_step() -> None:
    # the same server, one step of 4 streams of 5 tokens: the same TTFTs, ITL and throughput
    server = Server()
    (t,) = run_throughput(server, 4, 5)

    async def kaito_bench() -> load.RunResult:
        workload = Workload(tuple(Conversation((f"p{i}",), 5) for i in range(4)), "completions", "test")
        plan = Plan(budget=Budget(requests=4), steps=(Step(concurrency=4),), warmup=False)
        target = load.Target("http://fake.invalid", model="m")
        result = await load.run(target, workload, plan, opener=slow_connect(Server()))
        await asyncio.sleep(1)
        return result

    step = run_virtual(kaito_bench()).steps[0]
    ttfts = sorted(s.ttft or 0.0 for s in step.samples)
    assert ttfts == exact(t["ttfts"])
    assert step.figures.output_throughput == exact(t["tok_s"])
    assert step.figures.itl.p50 == exact(t["itl_p50"])


@pytest.mark.parametrize("open_first", [True, False], ids=["connections-opened-first", "connect-in-step"])
def test_sixteen_streams_complete_after_the_server_closed_every_idle_connection(open_first: bool) -> None:
    # between two steps the server closes the connections it kept alive (its keep-alive timeout
    # ran out while other servers were measured): the next step must still complete every stream,
    # whether the step opens its connections first or each request takes an idle one (the client
    # used to retry such a request on another idle connection, just as closed: "connection reset")
    server = Server(one_shot=True)
    rounds = run_throughput(server, 16, 4, steps=2, open_first=open_first)
    assert [(t["complete"], t["valid"]) for t in rounds] == [(16, True), (16, True)], [
        t["errors"] for t in rounds
    ]
    assert len(server.bodies) == 1 + 32  # every request answered once: none lost, none sent twice


def _sample(tokens: int, status: int = 200, error: str = "") -> Sample:
    chunks = [0.1 + 0.01 * i for i in range(tokens)]
    return Sample(
        start=0.0,
        end=chunks[-1] if chunks else 0.1,
        chunk_times=chunks,
        output_tokens=tokens,
        status=status,
        error=error,
    )


@pytest.mark.parametrize(
    ("tokens", "failure", "complete", "short", "valid"),
    [
        pytest.param([8, 8, 8], None, 3, 0, True, id="all-full"),
        pytest.param([8, 0, 8], None, 3, 1, False, id="one-ended-at-once"),
        pytest.param([8, 5, 8], None, 3, 1, False, id="one-ended-early"),
        pytest.param([8, 8], "connection: ConnectionResetError", 2, 0, False, id="one-reset"),
        pytest.param([8, 8], "truncated: the stream ended without data: [DONE]", 2, 0, False, id="one-cut"),
    ],
)
def test_a_round_is_valid_only_with_every_token_of_every_stream(
    tokens: list[int], failure: str | None, complete: int, short: int, valid: bool
) -> None:
    samples = [_sample(n) for n in tokens]
    if failure:
        samples.append(_sample(0, error=failure))
    t = sc.round_figures(samples, 8)
    assert (t["complete"], t["short"], t["valid"]) == (complete, short, valid)


def _round(tok_s: float, valid: bool = True) -> dict[str, Any]:
    return {
        "tok_s": tok_s,
        "valid": valid,
        "complete": 4 if valid else 3,
        "short": 0,
        "errors": [] if valid else ["connection: reset"],
        "tokens": 64,
        "wall_s": 1.0,
        "ttft_p50": 0.1,
        "ttft_p95": 0.2,
        "itl_p50": 0.01,
    }


def test_invalid_rounds_are_kept_for_the_record_but_never_counted() -> None:
    # an invalid round that looks fastest (less work done) is neither the best round nor in a ratio
    ours = sc.summarize_rounds([_round(50.0), _round(90.0, valid=False), _round(40.0)])
    assert ours["tok_s"] == 50.0
    assert (ours["valid_rounds"], ours["rounds"], ours["complete"]) == (2, 3, 3)
    assert ours["errors"] == ["connection: reset"]
    base = sc.summarize_rounds([_round(100.0), _round(100.0), _round(80.0, valid=False)])
    results = {"pykaito": {"throughput": {"4": ours}}, "llama-server": {"throughput": {"4": base}}}
    assert sc.paired_median(results, "pykaito", "llama-server", "4") == exact(0.5)  # round 1 only


def test_a_step_with_no_valid_round_reports_no_figures() -> None:
    none = sc.summarize_rounds([_round(90.0, valid=False)])
    assert math.isnan(none["tok_s"]) and math.isnan(none["ttft_p50"])
    results = {"pykaito": {"throughput": {"4": none}, "mixed": None}}
    meta = {"date": "d", "model": "m", "threads": 1, "parallel": 4, "ctx": 8, "max_tokens": 64, "rounds": 1}
    meta["machine"] = "x"
    row = next(line for line in sc.report(results, meta).splitlines() if line.startswith("| pykaito | 4 |"))
    assert row == "| pykaito | 4 | 3/4 | 0/1 | n/a | n/a | n/a | n/a | n/a |"


@pytest.mark.parametrize(
    ("ttfts", "shape"),
    [
        pytest.param([0.74, 0.74, 0.741, 0.74], "4", id="one-batch"),
        pytest.param([0.15, 0.70, 0.70, 0.71], "1+3", id="one-alone"),
        pytest.param([0.35, 0.80, 0.36, 0.80], "2+2", id="two-and-two"),
        pytest.param([0.2], "1", id="single"),
    ],
)
def test_prefill_groups(ttfts: list[float], shape: str) -> None:
    assert agreement.prefill_groups(ttfts) == shape


def test_unseen_copy_chats_differ_each_round_and_leave_the_workload_alone() -> None:
    plain = sc.copy_messages("multi-turn")
    assert plain == sc.COPY_WORKLOADS["multi-turn"]
    first, second = sc.copy_messages("multi-turn", "1-42"), sc.copy_messages("multi-turn", "2-42")
    assert first[0]["content"].startswith("(Request 1-42.) Describe a day")
    assert first[0] != second[0] and first[1:] == plain[1:]
    assert sc.COPY_WORKLOADS["multi-turn"][0]["content"].startswith("Describe a day")  # not changed
    ran = {w: {"tok_s": 100.0, "rounds_tok_s": [100.0], "acceptance_rate": 0.5} for w in sc.COPY_WORKLOADS}
    unseen = "\n".join(sc.copy_report({"pykaito": {"copy": ran}}, unseen=True))
    repeated = "\n".join(sc.copy_report({"pykaito": {"copy": ran}}))
    assert "new to every server" in unseen and "remember an earlier round" in repeated
    assert "| multi-turn | pykaito | 100.0 |" in unseen
