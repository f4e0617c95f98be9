"""A small OpenAI-compatible HTTP server for the client's error paths.

The real runtime serves the happy paths in the end-to-end tests; this one plays the cases a
healthy server never shows: a 503 while loading, a 4xx, a missing usage report, a wrong key.
It is a real server on 127.0.0.1 (stdlib ``http.server``), driven over the wire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    health_status: int = 200
    chat_status: int = 200
    chat_failures_before_success: int = 0  # answer 503 this many times first
    send_usage: bool = True
    words: tuple[str, ...] = ("Hello", " from", " the", " stand-in", ".")
    delay_s: float = 0.0
    first_delay_s: float = 0.0  # before the answer starts (the headers), as a model reads the prompt
    cut_after: int | None = None  # drop the connection after this many words, without a finish
    api_key: str | None = None
    model: str = "standin-model"
    # a request that is not streamed (a title): this text, or this error status, after this delay
    complete_text: str = "Greeting from the stand-in"
    complete_status: int = 200
    complete_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        key = self.server.behaviour.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": {"message": "invalid API key", "type": "auth", "param": None, "code": 401}})
        return False

    def do_GET(self) -> None:
        b = self.server.behaviour
        b.headers.append(dict(self.headers))
        if self.path == "/health":
            self._json(b.health_status, {"status": "ok" if b.health_status == 200 else "loading"})
        elif self.path == "/v1/models":
            if self._authorized():
                self._json(
                    200, {"object": "list", "data": [{"id": b.model, "object": "model", "owned_by": "x"}]}
                )
        else:
            self._json(
                404, {"error": {"message": "not found", "type": "not_found", "param": None, "code": 404}}
            )

    def do_POST(self) -> None:
        b = self.server.behaviour
        b.headers.append(dict(self.headers))
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        b.requests.append(body)
        if not self._authorized():
            return
        if self.path == "/tokenize":
            self._json(200, {"count": 11, "max_model_len": 2048, "tokens": list(range(11))})
            return
        if b.chat_failures_before_success > 0:
            b.chat_failures_before_success -= 1
            self._json(
                503, {"error": {"message": "loading", "type": "unavailable", "param": None, "code": 503}}
            )
            return
        if b.chat_status != 200:
            self._json(
                b.chat_status,
                {
                    "error": {
                        "message": "max_tokens must be at least 1",
                        "type": "invalid_request_error",
                        "param": "max_tokens",
                        "code": None,
                    }
                },
            )
            return
        if not body.get("stream"):
            self._complete(b, body)
            return
        time.sleep(b.first_delay_s)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        created = int(time.time())
        words = b.words[: int(body.get("max_tokens") or len(b.words))]
        try:
            for i, word in enumerate(words):
                if b.cut_after is not None and i == b.cut_after:
                    self.close_connection = True
                    return
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": b.model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(b.delay_s)
            reason = "length" if len(words) < len(b.words) else "stop"
            last = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": created,
                "model": b.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
            }
            self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
            if b.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": b.model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 11,
                        "completion_tokens": len(words),
                        "total_tokens": 11 + len(words),
                    },
                }
                self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return

    def _complete(self, b: Behaviour, body: dict[str, Any]) -> None:
        time.sleep(b.complete_delay_s)
        if b.complete_status != 200:
            error = {
                "message": "the stand-in fails this",
                "type": "server_error",
                "param": None,
                "code": None,
            }
            self._json(b.complete_status, {"error": error})
            return
        words = len(b.complete_text.split())
        self._json(
            200,
            {
                "id": "c2",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": b.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": b.complete_text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": words, "total_tokens": 11 + words},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: Behaviour, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.behaviour = behaviour


@contextmanager
def standin_server(behaviour: Behaviour | None = None, port: int = 0) -> Iterator[tuple[str, Behaviour]]:
    """Serve on ``port`` (a free one by default); yields the URL and the live behaviour to adjust."""
    b = behaviour or Behaviour()
    server = _Server(b, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", b
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
