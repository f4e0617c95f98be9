"""A stand-in OpenAI server whose timing is set, not measured: the yardstick for ``kaito bench``.

It answers ``/v1/models``, ``/tokenize`` (one token per whitespace-separated word) and streaming
``/v1/completions`` and ``/v1/chat/completions`` with one word per token: the first token
``ttft_s`` after the request is admitted, then one every ``tpot_s`` (scheduled on absolute times,
so delays do not add up), ``max_tokens`` in all. At most ``capacity`` requests stream at once;
up to ``max_queue`` more wait for a slot and the rest get HTTP 429. Every ``fail_every``-th
request gets HTTP 500; every ``slow_every``-th waits ``slow_ttft_s`` for its first token instead.

With ``ttft_s = tpot_s = 0`` every answer goes out in one write: the instant server that measures
the load generator's own ceiling (``kaito bench ceiling``). Plain asyncio, no framework, so the
server costs little of the machine it shares with the client.

    python -m pykaito.bench.standin --port 8000 --ttft 0.1 --tpot 0.01 --capacity 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

MODEL = "standin"


@dataclass(frozen=True)
class Timing:
    ttft_s: float = 0.1
    tpot_s: float = 0.01
    capacity: int = 0  # 0: unlimited
    max_queue: int = -1  # -1: unlimited
    fail_every: int = 0
    slow_every: int = 0
    slow_ttft_s: float = 0.0
    default_tokens: int = 16


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _json_response(status: int, obj: object, reason: str = "OK") -> bytes:
    body = json.dumps(obj).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


class StandIn:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.count = 0
        self.running = 0
        self.timeline: list[dict[str, Any]] = []
        self.waiting = 0
        self.slot = asyncio.Condition()
        chat = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": " tok"}}]}
        text = {"object": "text_completion", "choices": [{"index": 0, "text": " tok", "finish_reason": None}]}
        self.token = {"chat": _event(chat), "text": _event(text)}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                await self.route(method, path, body, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if path == "/v1/models":
            writer.write(_json_response(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}))
        elif path == "/stand-in/timeline":
            writer.write(_json_response(200, self.timeline))
        elif path == "/health":
            writer.write(_json_response(200, {}))
        elif path == "/tokenize" and method == "POST":
            prompt = json.loads(body).get("prompt", "")
            writer.write(
                _json_response(200, {"count": len(prompt.split()), "max_model_len": 8192, "tokens": []})
            )
        elif path in ("/v1/completions", "/v1/chat/completions") and method == "POST":
            received = asyncio.get_running_loop().time()
            await self.complete(json.loads(body), "chat" if "chat" in path else "text", writer, received)
        else:
            writer.write(_json_response(404, {"error": {"message": f"no route {path}"}}, "Not Found"))

    async def complete(
        self, request: dict[str, Any], kind: str, writer: asyncio.StreamWriter, received: float
    ) -> None:
        t = self.timing
        self.count += 1
        number = self.count
        record: dict[str, Any] = {"number": number, "received": received, "status": 200, "writes": []}
        self.timeline.append(record)
        if t.fail_every and number % t.fail_every == 0:
            record["status"] = 500
            writer.write(
                _json_response(500, {"error": {"message": "stand-in failure"}}, "Internal Server Error")
            )
            return
        if t.capacity and self.running >= t.capacity:
            if t.max_queue >= 0 and self.waiting >= t.max_queue:
                record["status"] = 429
                writer.write(_json_response(429, {"error": {"message": "queue full"}}, "Too Many Requests"))
                return
            self.waiting += 1
            async with self.slot:
                await self.slot.wait_for(lambda: self.running < t.capacity)
            self.waiting -= 1
        self.running += 1
        try:
            await self.stream(request, kind, number, writer, record["writes"])
        finally:
            self.running -= 1
            async with self.slot:
                self.slot.notify(1)

    async def stream(
        self,
        request: dict[str, Any],
        kind: str,
        number: int,
        writer: asyncio.StreamWriter,
        writes: list[float],
    ) -> None:
        t = self.timing
        tokens = int(request.get("max_tokens") or t.default_tokens)
        if kind == "chat":
            messages = request.get("messages") or []
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        else:
            prompt_tokens = len(str(request.get("prompt", "")).split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        }
        last: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        if kind == "chat":
            last["delta"] = {}
        else:
            last["text"] = ""
        finish = {"choices": [last]}
        tail = _event(finish) + _event({"choices": [], "usage": usage}) + b"data: [DONE]\n\n"
        token = self.token[kind]
        ttft = t.slow_ttft_s if t.slow_every and number % t.slow_every == 0 else t.ttft_s
        if ttft == 0 and t.tpot_s == 0:
            writer.write(STREAM_HEAD + _frame(token * tokens + tail) + b"0\r\n\r\n")
            return
        writer.write(STREAM_HEAD)
        loop = asyncio.get_running_loop()
        first = loop.time() + ttft
        for i in range(tokens):
            delay = first + i * t.tpot_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writes.append(loop.time())
            writer.write(_frame(token))
            await writer.drain()
        writer.write(_frame(tail) + b"0\r\n\r\n")


async def serve(port: int, timing: Timing, host: str = "127.0.0.1") -> None:
    standin = StandIn(timing)
    server = await asyncio.start_server(standin.handle, host, port, backlog=1024)
    print(f"stand-in serving on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def standin_process(port: int, timing: Timing, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Run the stand-in in a child process on 127.0.0.1:``port``; yield its URL; stop it after."""
    cmd = [sys.executable, "-m", "pykaito.bench.standin", "--port", str(port)]
    cmd += ["--ttft", str(timing.ttft_s), "--tpot", str(timing.tpot_s), "--capacity", str(timing.capacity)]
    cmd += ["--max-queue", str(timing.max_queue), "--fail-every", str(timing.fail_every)]
    cmd += ["--slow-every", str(timing.slow_every), "--slow-ttft", str(timing.slow_ttft_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"the stand-in server exited while starting: {err[-500:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the stand-in server did not answer on {url} within {start_timeout_s:g} s"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft", type=float, default=0.1)
    parser.add_argument("--tpot", type=float, default=0.01)
    parser.add_argument("--capacity", type=int, default=0)
    parser.add_argument("--max-queue", type=int, default=-1)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--slow-every", type=int, default=0)
    parser.add_argument("--slow-ttft", type=float, default=0.0)
    a = parser.parse_args()
    timing = Timing(a.ttft, a.tpot, a.capacity, a.max_queue, a.fail_every, a.slow_every, a.slow_ttft)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, timing))


if __name__ == "__main__":
    main()
