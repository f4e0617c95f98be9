"""kaito bench's figures are exact against a server with known delays (virtual clock, in memory).

The server and the client share one event loop whose clock jumps from timer to timer
(tests/bench/virtual.py), so no scheduling noise reaches the figures: each one must equal its
expected value computed by hand, which checks the timestamps (a chunk counts when its last byte
arrives, a role-only chunk is no token), the TTFT/ITL/TPOT/E2E definitions, the throughput's
duration and the percentile method all at once.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from pykaito.bench import load, prompts
from pykaito.bench.figures import Slo
from pykaito.bench.load import Budget, Plan, RunResult, Step
from pykaito.bench.standin import StandIn, Timing
from tests.bench.virtual import Handler, VirtualClockLoop, memory_opener, run_virtual

pytestmark = pytest.mark.timeout(60)

MS = 0.001
TOKENS = 5
PROMPT_TOKENS = 7
exact = pytest.approx


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _event(obj: object) -> bytes:
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _delta(delta: dict[str, str]) -> bytes:
    return _event({"choices": [{"index": 0, "delta": delta}]})


class Scripted:
    """Request k (from 0) answers its first token after (k+1)*10 ms, then a token every (k+1) ms.

    Before the first token it sends a role-only chunk at once (no output: not the first token);
    the second token's event goes out in two halves, the first half half a gap early (the token
    arrives with its last byte); the usage report and the end follow the last token at once.
    """

    def __init__(self, busy_s: float = 0.0) -> None:
        self.count = 0
        self.busy_s = busy_s
        self.writes: list[list[float]] = []
        self.bodies: list[dict[str, object]] = []

    def sent(self, writes: list[float]) -> None:
        """Note a token's last byte went out; with ``busy_s``, keep the loop busy right after."""
        loop = asyncio.get_running_loop()
        writes.append(loop.time())
        if self.busy_s:
            loop.call_soon(self.burn)

    def burn(self) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        loop.advance(self.busy_s)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.bodies.append(json.loads(await reader.readexactly(length)))
                await self.answer(writer)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def answer(self, writer: asyncio.StreamWriter) -> None:
        k = self.count
        self.count += 1
        ttft, gap = (k + 1) * 10 * MS, (k + 1) * MS
        writes: list[float] = []
        self.writes.append(writes)
        writer.write(HEAD)
        writer.write(_delta({"role": "assistant"}))
        await asyncio.sleep(ttft)
        for i in range(TOKENS):
            if i:
                await asyncio.sleep(gap / 2 if i == 1 else gap)
            event = _delta({"content": f" t{i}"})
            if i == 1:
                writer.write(event[:20])
                await asyncio.sleep(gap / 2)
                writer.write(event[20:])
            else:
                writer.write(event)
            self.sent(writes)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": TOKENS, "total_tokens": 12}
        writer.write(_event({"choices": [], "usage": usage}))
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()


def _measure(handler: Handler, plan: Plan, words: int = 3, max_tokens: int = TOKENS) -> RunResult:
    async def go() -> RunResult:
        async def no_tokenizer(text: str) -> int | None:
            return None

        workload = await prompts.synthetic(
            no_tokenizer, input_tokens=words, output_tokens=max_tokens, pool=4, api="chat"
        )
        target = load.Target("http://fake.invalid", model="fake")
        result = await load.run(target, workload, plan, opener=memory_opener(handler))
        await asyncio.sleep(1)  # virtual time: the servers see their connections close and end
        return result

    return run_virtual(go())


def _plan(concurrency: int, requests: int, **kwargs: object) -> Plan:
    budget = Budget(requests=requests)
    return Plan(budget=budget, steps=(Step(concurrency=concurrency),), warmup=False, **kwargs)  # type: ignore[arg-type]


def test_every_figure_is_exact_against_known_delays() -> None:
    step = _measure(Scripted().handle, _plan(1, 10)).steps[0]
    f = step.figures
    assert (f.requests, f.completed, f.failed) == (10, 10, 0)
    assert (f.input_tokens, f.output_tokens) == (10 * PROMPT_TOKENS, 10 * TOKENS)
    # TTFT of request k is (k+1)*10 ms: 10, 20 ... 100 ms (linear interpolation between ranks)
    ttfts = sorted(s.ttft or 0 for s in step.samples)
    assert ttfts == exact([(k + 1) * 10 * MS for k in range(10)])
    assert (f.ttft.mean, f.ttft.p50, f.ttft.p90, f.ttft.p99) == exact((55 * MS, 55 * MS, 91 * MS, 99.1 * MS))
    assert (f.ttft.min, f.ttft.max) == exact((10 * MS, 100 * MS))
    # TPOT of request k is its gap, (k+1) ms; ITL is every gap of every request: 4 of each
    tpot = (f.tpot.mean, f.tpot.p50, f.tpot.p90, f.tpot.p99)
    assert tpot == exact((5.5 * MS, 5.5 * MS, 9.1 * MS, 9.91 * MS))
    assert f.itl.count == 10 * (TOKENS - 1)
    assert (f.itl.mean, f.itl.p50, f.itl.p90, f.itl.p99) == exact((5.5 * MS, 5.5 * MS, 9.1 * MS, 10 * MS))
    # E2E = TTFT + 4 gaps = 14 (k+1) ms; one stream, no client time: the step lasts their sum
    assert (f.e2e.mean, f.e2e.p50, f.e2e.p90, f.e2e.p99) == exact((77 * MS, 77 * MS, 127.4 * MS, 138.74 * MS))
    duration = 14 * 55 * MS
    assert f.duration_s == exact(duration)
    assert f.request_throughput == exact(10 / duration)
    assert f.output_throughput == exact(10 * TOKENS / duration)
    assert f.total_token_throughput == exact(10 * (TOKENS + PROMPT_TOKENS) / duration)
    assert f.per_stream_tokens_per_s == exact(1 / (5.5 * MS))
    # the client's own loop never ran late here: its lag probe says so
    assert step.client_lag is not None and step.client_lag.count > 10
    assert step.client_lag.max == exact(0, abs=1e-12)


def test_goodput_is_exact_for_an_slo() -> None:
    # TTFT <= 55 ms: requests 0-4; TPOT <= 3.5 ms: requests 0-2; both: 3 of 10
    plan = _plan(1, 10, slo=Slo.parse("ttft=55ms,tpot=3.5ms"))
    f = _measure(Scripted().handle, plan).steps[0].figures
    assert f.good_requests == 3
    assert f.goodput == exact(3 / (14 * 55 * MS))
    # the worst gap of request k is (k+1) ms: ITL <= 6.5 ms leaves requests 0-5
    f = _measure(Scripted().handle, _plan(1, 10, slo=Slo.parse("itl=6.5ms"))).steps[0].figures
    assert f.good_requests == 6


def test_queueing_behind_a_capacity_is_exact() -> None:
    # the stand-in: TTFT 100 ms, 10 ms per token, 20 tokens, 2 slots; 4 streams, 8 requests.
    # Requests 1-2 start at once (TTFT 100 ms, E2E 290 ms); every later one waits one service
    # time (290 ms) for a slot: TTFT 390 ms, E2E 580 ms; 4 service times in all.
    standin = StandIn(Timing(ttft_s=0.1, tpot_s=0.01, capacity=2))
    step = _measure(standin.handle, _plan(4, 8), max_tokens=20).steps[0]
    f = step.figures
    assert f.completed == 8
    assert sorted(s.ttft or 0 for s in step.samples) == exact([0.1] * 2 + [0.39] * 6)
    assert sorted(s.e2e for s in step.samples) == exact([0.29] * 2 + [0.58] * 6)
    assert (f.itl.p50, f.itl.p99, f.itl.max, f.itl.min) == exact((0.01,) * 4)
    assert (f.tpot.min, f.tpot.max) == exact((0.01, 0.01))
    assert f.duration_s == exact(4 * 0.29)
    assert f.request_throughput == exact(8 / (4 * 0.29))
    assert f.output_throughput == exact(8 * 20 / (4 * 0.29))
    # the stand-in's own record of what it did matches the client's view exactly
    assert [len(r["writes"]) for r in standin.timeline] == [20] * 8


def test_a_busy_client_loop_does_not_delay_the_timestamps() -> None:
    # after every token the loop is kept busy 5 ms (other streams' parsing, a slow observer)
    # before the request's own coroutine runs: each token still counts when its bytes came in
    server = Scripted(busy_s=5 * MS)
    step = _measure(server.handle, _plan(1, 4)).steps[0]
    samples = sorted(step.samples, key=lambda s: s.start)
    for sample, writes in zip(samples, server.writes, strict=True):
        assert [step.origin + t for t in sample.chunk_times] == exact(writes)
        # the end's bytes came after the last token's, while the loop was busy: read 5 ms later
        assert step.origin + sample.end == exact(writes[-1] + 5 * MS)


def test_the_sweep_stops_where_throughput_stops_growing() -> None:
    # 2 slots, 10 tokens (190 ms a request): 1 stream makes 1/0.19 requests/s, 2 and 4 make 2/0.19
    standin = StandIn(Timing(ttft_s=0.1, tpot_s=0.01, capacity=2))
    plan = Plan(budget=Budget(requests=8), sweep_max=64, warmup=False)
    steps = _measure(standin.handle, plan, max_tokens=10).steps
    assert [s.step.concurrency for s in steps] == [1, 2, 4]
    throughput = [s.figures.request_throughput for s in steps]
    assert throughput == exact([1 / 0.19, 2 / 0.19, 2 / 0.19])


def test_the_warm_up_request_does_not_prime_a_measured_prompt() -> None:
    # a server with a prefix cache would answer a prompt it has just seen faster: the uncounted
    # warm-up request must not send one of the prompts the run measures
    server = Scripted()
    plan = Plan(budget=Budget(requests=4), steps=(Step(concurrency=1),))
    step = _measure(server.handle, plan).steps[0]
    warm_up, *measured = server.bodies
    assert len(measured) == step.figures.requests == 4
    assert all(body["messages"] != warm_up["messages"] for body in measured)
    assert warm_up["max_tokens"] == 8


class OneShot(Scripted):
    """Answers one request per connection; a second one on it finds it closed (a keep-alive timeout
    that ran out just as the request came), or, with ``hang_up``, the connection closes at once."""

    def __init__(self, hang_up: bool) -> None:
        super().__init__()
        self.hang_up = hang_up

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
            )
            self.bodies.append(json.loads(await reader.readexactly(length)))
            await self.answer(writer)
            if not self.hang_up:
                await reader.readuntil(b"\r\n\r\n")  # the next request: not answered
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("hang_up", [True, False], ids=["closed-seen", "closed-on-use"])
def test_connections_the_server_closed_are_replaced(hang_up: bool) -> None:
    # step 1 leaves 4 idle connections the server will not answer on again; step 2 (one stream)
    # must not fail on them: a connection seen closed is dropped, and a request whose connection
    # turns out closed is retried once on a new one (not on another idle one: just as stale)
    server = OneShot(hang_up)
    plan = Plan(budget=Budget(requests=4), steps=(Step(concurrency=4), Step(concurrency=1)), warmup=False)
    steps = _measure(server.handle, plan).steps
    assert [s.figures.completed for s in steps] == [4, 4], [x.error for s in steps for x in s.samples]
    assert len(server.bodies) == 8  # every request answered once: none lost, none sent twice
