"""Moving a file's bytes: a resumable HTTP GET into ``FILE.part``, written and hashed on two more threads.

``huggingface_hub`` finds the file, its size, checksum and token (see :mod:`pykaito.models.pull`);
this module streams the body through a pipeline of three threads joined by queues:

    caller  ── receives into a pooled 1 MiB buffer ──▶ writer ── writes it to the part ──▶ hasher
       ▲                                                                                  │
       └────────────── the buffer goes back to the pool once it is hashed ◀───────────────┘

Receiving, writing and hashing each run while the others wait on the kernel (socket reads, file
writes and ``hashlib`` on large buffers all release the GIL). The pool bounds the queues: at most
``BUFFERS`` buffers (32 MiB) are in flight, and 1 MiB buffers stay in the CPU's cache between steps.

Whole aligned buffers are written with ``O_DIRECT`` where the file system allows it: the bytes go
from the buffer to the disk without a copy into the page cache, which on a busy machine costs more
CPU than the SHA-256 does. The pull must reach the disk before it becomes a model anyway (it is
fsynced), so nothing is lost by not caching it. The last, partial buffer, and every write where
direct I/O is refused, go through the page cache, the writer starting their writeback as it goes
(Linux's ``sync_file_range``) so that the final fsync has little left to wait for.

The part only ever holds a prefix of the file: the writer writes buffers in the order they were
received, and a failed write stops the download. A resumed part is cut back to a 4 KiB boundary
(so that direct writes stay aligned) and the rest asked for from there. The digest covers every
byte of the part, those an interrupted pull left included (they are read back and hashed first,
while the rest arrives). ``urllib`` follows the hub's redirects to its content store and honours
``https_proxy``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import http.client
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from pykaito.errors import DownloadError

BUFFER = 1024 * 1024
BUFFERS = 32
ALIGN = 4096  # direct I/O wants buffers, lengths and file offsets on this boundary
WRITEBACK = 8 * 1024 * 1024
TIMEOUT_S = 60.0

_Item = tuple[memoryview, int] | None


def _aligned_buffer(size: int) -> memoryview:
    """A writable ``size``-byte buffer whose address is a multiple of ``ALIGN``."""
    raw = bytearray(size + ALIGN)
    address = ctypes.addressof((ctypes.c_char * len(raw)).from_buffer(raw))
    start = -address % ALIGN
    return memoryview(raw)[start : start + size]


def _pwrite(fd: int, view: memoryview, offset: int) -> int:
    return os.pwrite(fd, view, offset)


def _open_direct(path: Path) -> int | None:
    """A second descriptor on ``path`` for direct I/O; None where the OS or file system has none."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def _writeback_function() -> Callable[[int, int, int], None]:
    """Linux's ``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)``, or a no-op elsewhere.

    It starts writing a range to disk without waiting for it, so the final fsync finds little left
    to do instead of the whole file. Only a hint: durability comes from the fsync.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return lambda _fd, _offset, _length: None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    sync_file_range_write = 2

    def start_writeback(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, sync_file_range_write)

    return start_writeback


_start_writeback = _writeback_function()


class _Pipeline:
    """The writer and hasher threads behind the caller's reads, and the pool of buffers they share.

    The writer writes at ``prefix`` onwards: on ``direct`` (an ``O_DIRECT`` descriptor) when the
    buffer and offset are aligned, else on ``fd``. The ``prefix`` bytes already in the file (an
    interrupted pull's) are hashed first, by the hasher reading them back, while the caller
    receives the rest. A failure on either thread is kept in ``error`` and raised in the caller at
    its next :meth:`take`; the threads keep returning buffers to the pool so that the caller never
    waits for one forever.
    """

    def __init__(self, fd: int, direct: int | None, path: Path, prefix: int) -> None:
        self.fd = fd
        self.direct = direct
        self.direct_bytes = 0
        self.written = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self._prefix = prefix
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(_aligned_buffer(BUFFER))
        self._to_write: queue.Queue[_Item] = queue.Queue()
        self._to_hash: queue.Queue[_Item] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._write, name="pull-write", daemon=True),
            threading.Thread(target=self._hash, args=(path, prefix), name="pull-hash", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def take(self) -> memoryview:
        """A free buffer to receive into; raises what failed on the writer or hasher."""
        buffer = self._free.get()
        if self.error is not None:
            raise self.error
        return buffer

    def give(self, buffer: memoryview, length: int) -> None:
        """Hand over ``length`` received bytes, to be written and then hashed."""
        self._to_write.put((buffer, length))

    def unused(self, buffer: memoryview) -> None:
        self._free.put(buffer)

    def close(self) -> str:
        """Wait until everything handed over is written and hashed; the SHA-256 so far.

        Raises what failed on the writer or hasher, so a download is never reported whole after a
        write that did not happen.
        """
        self._to_write.put(None)
        interrupted = False
        for thread in self._threads:
            while thread.is_alive():  # the writer must be done with the file before it is closed
                try:
                    thread.join()
                except KeyboardInterrupt:
                    interrupted = True
        if interrupted:
            raise KeyboardInterrupt
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()

    def _write_at(self, view: memoryview, offset: int) -> None:
        """Every byte of ``view`` at ``offset``: directly when aligned, else through the page cache."""
        while view:
            aligned = offset % ALIGN == 0 and len(view) % ALIGN == 0
            direct = self.direct if aligned else None
            try:
                written = _pwrite(self.fd if direct is None else direct, view, offset)
            except OSError as exc:
                if direct is not None and exc.errno == errno.EINVAL:  # refused after all: no direct I/O
                    self.direct = None
                    continue
                raise
            if direct is not None:
                self.direct_bytes += written
            view, offset = view[written:], offset + written

    def _write(self) -> None:
        offset = flushed = self._prefix
        while (item := self._to_write.get()) is not None:
            buffer, length = item
            if self.error is None:
                try:
                    self._write_at(buffer[:length], offset)
                    offset += length
                    self.written += length
                    if offset - flushed >= WRITEBACK:
                        _start_writeback(self.fd, flushed, offset - flushed)
                        flushed = offset
                except BaseException as exc:  # raised again in the caller
                    self.error = exc
            if self.error is None:
                self._to_hash.put(item)
            else:
                self._free.put(buffer)
        self._to_hash.put(None)

    def _hash(self, path: Path, prefix: int) -> None:
        try:
            if prefix:
                _hash_file(path, prefix, self.digest)
        except BaseException as exc:  # raised again in the caller
            self.error = exc
        while (item := self._to_hash.get()) is not None:
            buffer, length = item
            if self.error is None:
                self.digest.update(buffer[:length])
            self._free.put(buffer)


def _hash_file(path: Path, upto: int, digest: hashlib._Hash) -> None:
    """Fold the first ``upto`` bytes of ``path`` into ``digest``."""
    view = memoryview(bytearray(BUFFER))
    with path.open("rb", buffering=0) as existing:
        while upto > 0:
            length = existing.readinto(view[: min(BUFFER, upto)])
            if not length:
                raise DownloadError(f"{path} shrank while it was read; pull again", "Unreachable")
            digest.update(view[:length])
            upto -= length


def _same_host(url: str, endpoint: str) -> bool:
    return urlparse(url).netloc == urlparse(endpoint).netloc


def fetch(
    url: str,
    part: Path,
    *,
    size: int | None,
    headers: Mapping[str, str],
    endpoint: str,
    on_bytes: Callable[[int], None],
) -> str:
    """Write the rest of ``url`` to ``part`` (a Range request when it holds bytes); return the SHA-256.

    Headers (the token) go only to the hub itself, never to the content store it redirects to.
    An interruption leaves ``part`` for the next call to resume. The SHA-256 is that of the whole
    part, fsynced, and only returned once the part holds ``size`` bytes (when ``size`` is known).
    """
    done = part.stat().st_size if part.is_file() else 0
    if size is not None and done >= size:
        whole = hashlib.sha256()
        _hash_file(part, done, whole)
        return whole.hexdigest()
    if done % ALIGN:
        done -= done % ALIGN
        os.truncate(part, done)
    sent = dict(headers) if _same_host(url, endpoint) else {}
    sent["Accept-Encoding"] = "identity"
    if done:
        sent["Range"] = f"bytes={done}-"
    request = urllib.request.Request(url, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if done and response.status != 206:  # the server ignored Range: start again
                done = 0
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | (0 if done else os.O_TRUNC), 0o644)
            direct = _open_direct(part)
            try:
                received, digest = _stream(response, fd, direct, part, done, on_bytes)
                os.fsync(fd)
            finally:
                if direct is not None:
                    os.close(direct)
                os.close(fd)
    except urllib.error.HTTPError as exc:
        reason = {401: "Unauthorized", 403: "Unauthorized", 404: "NotFound"}.get(exc.code, "Unreachable")
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} {exc.reason}", reason) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.IncompleteRead) as exc:
        raise DownloadError(
            f"{url}: the download stopped ({exc}); pull again to resume", "Unreachable"
        ) from exc
    total = done + received
    if size is not None and total != size:
        raise DownloadError(
            f"the connection closed at {total} of {size} bytes; pull again to resume", "Unreachable"
        )
    return digest


def _stream(
    response: http.client.HTTPResponse,
    fd: int,
    direct: int | None,
    part: Path,
    done: int,
    on_bytes: Callable[[int], None],
) -> tuple[int, str]:
    """Receive the body into pooled buffers for the writer and hasher; bytes received and the SHA-256."""
    pipeline = _Pipeline(fd, direct, part, done)
    read_into = response.readinto
    received = 0
    try:
        while True:
            buffer = pipeline.take()
            length = read_into(buffer)
            if not length:
                pipeline.unused(buffer)
                break
            pipeline.give(buffer, length)
            received += length
            on_bytes(length)
    finally:
        digest = pipeline.close()  # what was received is written even when the caller is interrupted
    return received, digest
