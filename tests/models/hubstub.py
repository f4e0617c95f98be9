"""A stand-in Hugging Face hub on 127.0.0.1 that serves files a test puts under fake repositories.

It answers what ``huggingface_hub`` calls for a download, the way the hub does:

- ``HEAD|GET /{repo}/resolve/{revision}/{file}``: a 302 to the content URL with ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the file's SHA-256, as for LFS files) and ``X-Linked-Size``; a gated repository
  without a valid ``Authorization: Bearer`` token answers 401 with ``X-Error-Code: GatedRepo``, an
  unknown repository 401 ``RepoNotFound``, an unknown file 404 ``EntryNotFound``;
- ``HEAD|GET /cdn/{sha256}`` on a second port (another origin, as the hub's content store is): the
  bytes, with ``Accept-Ranges`` and 206 answers to ``Range``;
- ``GET /api/models/{repo}/tree/{revision}``: the repository's files, with their LFS checksums.

Knobs a test sets: ``corrupt`` (serve other bytes than the advertised checksum), ``flip_at`` (serve
the right bytes but one, at that offset of the file, inverted: damage in transit that keeps the
size), ``delay_s`` (pause between 1 MiB blocks), ``stall_after`` (stop sending a body after that many
bytes until ``release`` is set, to interrupt a download mid-way), ``cut_after`` (close the connection
after that many bytes of a body), ``ignore_range`` (answer a Range request with the whole file and
200, as some servers do). ``requests`` records (method, path, Range).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BLOCK = 1024 * 1024


@dataclass
class Repo:
    files: dict[str, Path]
    commit: str
    gated: bool = False


@dataclass
class Hub:
    """The hub's content and knobs, shared with the request handler."""

    tokens: set[str] = field(default_factory=set)
    repos: dict[str, Repo] = field(default_factory=dict)
    blobs: dict[str, Path] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    flip_at: dict[str, int] = field(default_factory=dict)
    cut_after: int | None = None
    ignore_range: bool = False
    delay_s: float = 0.0
    stall_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""

    def add(self, repo: str, files: dict[str, Path], gated: bool = False) -> dict[str, str]:
        """Publish ``files`` under ``repo``; return their SHA-256 by name."""
        shas = {}
        for name, path in files.items():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(BLOCK * 8):
                    digest.update(block)
            shas[name] = digest.hexdigest()
            self.blobs[shas[name]] = path
        commit = hashlib.sha1(repo.encode()).hexdigest()
        self.repos[repo] = Repo(files=dict(files), commit=commit, gated=gated)
        return shas

    def sha_of(self, path: Path) -> str:
        return next(sha for sha, p in self.blobs.items() if p == path)


RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/?]+)")
CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        return None

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _error(self, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(payload)

    def _repo(self, name: str) -> Repo | None:
        repo = self.hub.repos.get(name)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        auth = self.headers.get("Authorization", "")
        if repo.gated and auth.removeprefix("Bearer ") not in self.hub.tokens:
            self._error(401, "GatedRepo", "Access to this model is restricted. You must have access to it.")
            return None
        return repo

    def _route(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.hub.requests.append((self.command, path, self.headers.get("Range", "")))
        if match := RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], match["file"])
        elif match := TREE.match(path):
            self._tree(match["repo"])
        elif match := CDN.match(path):
            self._content(match["sha"], body)
        else:
            self._error(404, "NotFound", "no such page")

    def _resolve(self, repo_name: str, revision: str, file_name: str) -> None:
        repo = self._repo(repo_name)
        if repo is None:
            return
        path = repo.files.get(file_name)
        if path is None:
            self._error(404, "EntryNotFound", f"{file_name} does not exist")
            return
        sha = self.hub.sha_of(path)
        self.send_response(302)
        self.send_header("Location", f"{self.hub.cdn_url}/cdn/{sha}")
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else repo.commit
        self.send_header("X-Repo-Commit", commit)
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(path.stat().st_size))
        self.send_header("ETag", '"0000"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _tree(self, repo_name: str) -> None:
        repo = self._repo(repo_name)
        if repo is None:
            return
        entries = []
        for name, path in sorted(repo.files.items()):
            sha, size = self.hub.sha_of(path), path.stat().st_size
            lfs = {"oid": sha, "size": size, "pointerSize": 134}
            entries.append({"type": "file", "oid": sha[:40], "size": size, "path": name, "lfs": lfs})
        payload = json.dumps(entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _content(self, sha: str, body: bool) -> None:
        path = self.hub.blobs.get(sha)
        if path is None:
            self._error(404, "EntryNotFound", "no such blob")
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        requested = None if self.hub.ignore_range else RANGE.match(self.headers.get("Range", ""))
        if requested:
            start = int(requested[1])
            end = int(requested[2]) if requested[2] else size - 1
        length = max(0, end - start + 1)
        self.send_response(206 if requested else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with suppress(BrokenPipeError, ConnectionResetError):
            self._send(path, sha, start, length)

    def _sendfile(self, fd: int, start: int, length: int) -> None:
        """Every byte of the range: sendfile may send less than asked."""
        while length > 0:
            sent = os.sendfile(self.connection.fileno(), fd, start, length)
            if sent == 0:
                return
            start, length = start + sent, length - sent

    def _send(self, path: Path, sha: str, start: int, length: int) -> None:
        if sha in self.hub.corrupt:  # the advertised checksum, other bytes
            sent = 0
            while sent < length:
                chunk = b"\x00" * min(BLOCK, length - sent)
                self.wfile.write(chunk)
                sent += len(chunk)
            return
        if sha in self.hub.flip_at or self.hub.cut_after is not None:
            self._send_damaged(path, sha, start, length)
            return
        with path.open("rb") as f:
            if self.hub.stall_after is not None and length > self.hub.stall_after:
                self.wfile.flush()
                self._sendfile(f.fileno(), start, self.hub.stall_after)
                self.hub.release.wait(120)
                start, length = start + self.hub.stall_after, length - self.hub.stall_after
            if self.hub.delay_s <= 0:
                self.wfile.flush()
                self._sendfile(f.fileno(), start, length)
                return
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(BLOCK, left))
                self.wfile.write(chunk)
                self.wfile.flush()
                left -= len(chunk)
                time.sleep(self.hub.delay_s)

    def _send_damaged(self, path: Path, sha: str, start: int, length: int) -> None:
        """The range with ``flip_at``'s byte inverted, or closed after ``cut_after`` bytes."""
        flip = self.hub.flip_at.get(sha, -1)
        if self.hub.cut_after is not None:
            length = min(length, self.hub.cut_after)
            self.close_connection = True
        with path.open("rb") as f:
            f.seek(start)
            offset = start
            while offset < start + length:
                chunk = bytearray(f.read(min(BLOCK, start + length - offset)))
                if offset <= flip < offset + len(chunk):
                    chunk[flip - offset] ^= 0xFF
                self.wfile.write(chunk)
                offset += len(chunk)
        self.wfile.flush()
        if self.hub.cut_after is not None:
            self.connection.shutdown(socket.SHUT_RDWR)


@contextmanager
def running_hub(port: int = 0) -> Iterator[Hub]:
    """A stand-in hub on 127.0.0.1 (a free port unless given) and its content store, stopped on exit."""
    hub = Hub()
    handler = type("BoundHandler", (Handler,), {"hub": hub})
    servers = [ThreadingHTTPServer(("127.0.0.1", p), handler) for p in (port, 0)]
    hub.url, hub.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    threads = []
    for server in servers:
        server.daemon_threads = True
        threads.append(threading.Thread(target=server.serve_forever, name="hub-standin", daemon=True))
        threads[-1].start()
    try:
        yield hub
    finally:
        for server, thread in zip(servers, threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join(10)
