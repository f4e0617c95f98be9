"""Filling a cluster weight cache: every file of a Hugging Face model at one revision, into a directory.

The download Job the operator runs before a Workspace's inference pods start calls
``python -m pykaito.models.snapshot --repo ORG/MODEL --revision REV --dest /cache``. Each file goes
through the same resumable, checked transfer as ``kaito pull`` (:mod:`pykaito.models.transfer`):
bytes into ``FILE.part``, SHA-256 compared with the hub's LFS checksum, then renamed. The marker
``kaito-cache.json`` is written last, so a cache without it is never taken as complete; a Job run
again on a complete cache downloads nothing.

What the operator reads: one JSON line of progress on stdout every few seconds
(``{"done": BYTES, "total": BYTES}``, read from the pod's log) and, when the process ends, one
JSON object in the termination message: ``{"ok": true, "commit": ..., "bytes": ...}`` or
``{"ok": false, "reason": "Unauthorized", "message": ...}`` (a :class:`DownloadError` reason). The
token comes from ``HF_TOKEN`` only and is never printed.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pykaito.errors import DownloadError
from pykaito.models.pull import GIB, _hub_error, _network_errors, check_disk, endpoint_from_env, remote_file
from pykaito.models.refs import ModelRef
from pykaito.models.store import PART_SUFFIX
from pykaito.models.transfer import fetch

log = logging.getLogger(__name__)

MARKER = "kaito-cache.json"
MODEL_DIR = "model"
"""The model's files live under ``<cache>/model``: the path the inference engine is given."""
EXCLUDED_PREFIXES = ("original/",)
"""Duplicate checkpoints some repositories ship for other tools (as upstream's mirror leaves out)."""
PROGRESS_EVERY_S = 5.0

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # the LFS checksum; None for small files kept in git


@dataclass(frozen=True)
class Snapshot:
    """A complete cache: what it holds and how much this run fetched."""

    repo: str
    revision: str
    commit: str
    files: tuple[str, ...]
    size: int
    downloaded: int


def _safe(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


def list_files(repo: str, revision: str, endpoint: str, token: str | None) -> list[RemoteFile]:
    """The repository's files at ``revision`` (recursive), less the excluded duplicates."""
    from huggingface_hub import HfApi

    ref = ModelRef(kind="huggingface", name=repo, repo=repo, revision=revision)
    try:
        entries = list(
            HfApi(endpoint=endpoint, token=token or False).list_repo_tree(
                repo, revision=revision, recursive=True
            )
        )
    except _network_errors() as exc:
        raise _hub_error(exc, ref, endpoint, token) from exc
    files = []
    for entry in entries:
        size = getattr(entry, "size", None)
        if size is None or entry.path.startswith(EXCLUDED_PREFIXES):
            continue  # a folder, or a duplicate checkpoint
        if not _safe(entry.path):
            raise DownloadError(f"{repo}: the hub listed an unsafe file name {entry.path!r}", "NotFound")
        lfs = getattr(entry, "lfs", None)
        files.append(RemoteFile(entry.path, int(size), getattr(lfs, "sha256", None) if lfs else None))
    if not files:
        raise DownloadError(f"{repo} at {revision} holds no files to download", "NotFound")
    return files


def read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(dest: Path, repo: str, revision: str) -> Snapshot | None:
    marker = read_marker(dest)
    if marker is None or marker.get("repo") != repo or marker.get("revision") != revision:
        return None
    return Snapshot(
        repo=repo,
        revision=revision,
        commit=str(marker.get("commit") or ""),
        files=tuple(marker.get("files") or ()),
        size=int(marker.get("bytes") or 0),
        downloaded=0,
    )


def download_snapshot(
    repo: str,
    revision: str,
    dest: Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    keep_free: int = GIB // 4,
    progress: ProgressFn | None = None,
) -> Snapshot:
    """Make ``dest`` hold every file of ``repo`` at ``revision``; raises DownloadError with a reason."""
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    done_before = _complete(dest, repo, revision)
    if done_before is not None:
        if progress is not None:
            progress(done_before.size, done_before.size)
        return done_before
    files = list_files(repo, revision, endpoint, token)
    root = dest / MODEL_DIR
    total = sum(f.size for f in files)
    have = {f.path for f in files if (root / f.path).is_file() and (root / f.path).stat().st_size == f.size}
    done = sum(f.size for f in files if f.path in have)
    parts = sum(_part_size(root / f.path) for f in files if f.path not in have)
    check_disk(dest, total - done - parts, keep_free)
    headers = build_hf_headers(token=token or False)
    commit, downloaded = "", 0
    if progress is not None:
        progress(done, total)
    for item in files:
        if item.path in have:
            continue
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        ref = ModelRef(kind="huggingface", name=repo, repo=repo, file=item.path, revision=revision)
        remote = remote_file(ref, endpoint, token)
        commit = commit or remote.commit
        part = target.with_name(target.name + PART_SUFFIX)
        base = done

        def advance(n: int) -> None:
            nonlocal done, downloaded
            done += n
            downloaded += n
            if progress is not None:
                progress(done, total)

        done = base + _part_size(part)  # resumed: what an earlier run left counts as done
        digest = _fetch(remote.url, part, item.size, headers, endpoint, advance)
        expected = item.sha256 or remote.sha256
        if expected is not None and digest != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{repo}/{item.path} failed its checksum: SHA-256 {digest} where {expected} was expected; "
                "the partial file was deleted, run the download again",
                "ChecksumMismatch",
            )
        part.replace(target)
        done = base + item.size
    snapshot = Snapshot(repo, revision, commit, tuple(f.path for f in files), total, downloaded)
    _write_marker(dest, snapshot)
    if progress is not None:
        progress(total, total)
    return snapshot


def _part_size(path: Path) -> int:
    part = path if path.name.endswith(PART_SUFFIX) else path.with_name(path.name + PART_SUFFIX)
    return part.stat().st_size if part.is_file() else 0


def _fetch(
    url: str, part: Path, size: int, headers: dict[str, str], endpoint: str, advance: Callable[[int], None]
) -> str:
    try:
        return fetch(url, part, size=size, headers=headers, endpoint=endpoint, on_bytes=advance)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"the cache volume filled up while writing {part.name}; give the cache a larger size "
                "(chart value weightCache.size) and delete the download Job to run it again",
                "DiskFull",
            ) from exc
        raise DownloadError(f"cannot write {part}: {exc}", "DiskFull") from exc


def _write_marker(dest: Path, snapshot: Snapshot) -> None:
    data = {
        "repo": snapshot.repo,
        "revision": snapshot.revision,
        "commit": snapshot.commit,
        "files": list(snapshot.files),
        "bytes": snapshot.size,
    }
    temporary = dest / f".{MARKER}.tmp"
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(dest / MARKER)


class _Reporter:
    """Progress as JSON lines on stdout, at most one every PROGRESS_EVERY_S (and the last one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done < total and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        print(json.dumps({"done": done, "total": total}), flush=True)


def _write_result(path: str, result: dict[str, Any]) -> None:
    text = json.dumps(result)
    print(text, flush=True)
    if path:
        try:
            Path(path).write_text(text[:4000])  # the kubelet keeps at most 4096 bytes
        except OSError as exc:
            print(f"cannot write the result to {path}: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pykaito.models.snapshot",
        description="Download every file of a Hugging Face model at one revision into a directory "
        "(a weight cache volume). The token comes from HF_TOKEN.",
    )
    parser.add_argument("--repo", required=True, help="the model's repository, ORG/MODEL")
    parser.add_argument("--revision", default="main", help="a branch, tag or commit (default: main)")
    parser.add_argument("--dest", required=True, help="the cache directory (the volume's mount)")
    parser.add_argument("--result-file", default="", help="where to write the result JSON as well")
    parser.add_argument("--keep-free-mib", type=int, default=256, help="space to leave free (MiB)")
    args = parser.parse_args(argv)
    token = os.environ.get("HF_TOKEN") or None
    started = time.monotonic()
    try:
        snapshot = download_snapshot(
            args.repo,
            args.revision,
            Path(args.dest),
            token=token,
            keep_free=args.keep_free_mib * 1024 * 1024,
            progress=_Reporter(),
        )
    except DownloadError as exc:
        _write_result(args.result_file, {"ok": False, "reason": exc.reason, "message": str(exc)})
        return 1
    except ModuleNotFoundError as exc:  # an image without the hub extra
        message = (
            f"this image cannot download from the hub ({exc}): run the downloader in an image with "
            "pykaito[hub] installed (the chart value weightCache.downloaderImage)"
        )
        _write_result(args.result_file, {"ok": False, "reason": "MissingDependency", "message": message})
        return 1
    _write_result(
        args.result_file,
        {
            "ok": True,
            "commit": snapshot.commit,
            "bytes": snapshot.size,
            "downloaded": snapshot.downloaded,
            "files": len(snapshot.files),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
