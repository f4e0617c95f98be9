"""Pulling a GGUF into the local store through ``huggingface_hub``: resumable, checked, never half done.

The steps of :func:`pull`:

1. find the file (a repository without a named file: its listing, preferring Q4_K_M);
2. ask the hub for its size, checksum and commit (a HEAD request, with the token if any), and refuse
   before any byte when they disagree with what the catalog or ``--sha256`` expects;
3. refuse when the disk cannot hold what is left to fetch plus ``keep_free`` bytes;
4. fetch into ``FILE.part`` (:mod:`pykaito.models.transfer`), resuming from what an interrupted
   pull left (an HTTP Range request), hashing on a second thread while the bytes arrive;
5. compare the SHA-256 with the catalog's (or the hub's own LFS checksum); on a mismatch delete the
   part and refuse;
6. rename the part to the file, read its GGUF header and write ``model.json``: only now is it a model.

Checksums: a catalog entry's SHA-256 is ``verified`` only where it was computed from the file itself;
the others are recorded from public manifests, so the hub's own SHA-256 must agree with them and
is what the file is checked against (the size too). ``require_checksum`` (``kaito pull
--require-checksum``, or ``KAITO_REQUIRE_CHECKSUM=1``) refuses, before any request, a pull that only
such a checksum or the server's own word would check: it needs a verified entry or ``--sha256``.

The token comes from ``HF_TOKEN`` or the hub's login (``hf auth login``), as ``huggingface_hub`` finds it;
``HF_ENDPOINT`` points at another hub (a mirror, or a stand-in in tests).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pykaito.errors import DownloadError, InputError
from pykaito.models import gguf
from pykaito.models.refs import ModelRef, choose_gguf, quantization_of
from pykaito.models.store import PART_SUFFIX, ModelStore, StoredModel, now_iso
from pykaito.models.transfer import fetch

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_ENDPOINT = "https://huggingface.co"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LOCK = ".lock"

# (bytes done, bytes in all) as the download advances; total is None when the server does not say.
ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Remote:
    """What the hub says about the file before the download: where, how big, which checksum."""

    url: str
    size: int | None
    sha256: str | None
    commit: str


REQUIRE_CHECKSUM_ENV = "KAITO_REQUIRE_CHECKSUM"


def require_checksum_from_env() -> bool:
    """``KAITO_REQUIRE_CHECKSUM`` set to 1, true, yes or on: every pull needs a trusted checksum."""
    return os.environ.get(REQUIRE_CHECKSUM_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def checksum_note(ref: ModelRef) -> str | None:
    """What a user should know before pulling a catalog preset whose checksum is not verified; else None.

    (A Hugging Face file without ``--sha256`` is checked against the hub's own checksum, as any hub
    client does, and the pull's last line says so; that needs no note.)
    """
    if ref.kind != "preset" or ref.trusted:
        return None
    if ref.checksum == "unverified":
        return (
            f"the catalog's SHA-256 of {ref.file} is not verified (recorded from public manifests, not "
            f"computed here from the file): the download is checked against the hub's own SHA-256 at "
            f"revision {ref.revision[:12]}, which must agree with it, and against its size"
        )
    return (
        f"the catalog records no SHA-256 of {ref.file}: the download is checked against the hub's own "
        "SHA-256 and its size (pass --sha256 to check one you trust)"
    )


def _require_trusted(ref: ModelRef) -> None:
    if ref.trusted:
        return
    what = {
        "unverified": f"the catalog's SHA-256 of {ref.file} is not verified (recorded from public manifests)",
        "": "no SHA-256 of it is known before the download",
    }[ref.checksum]
    raise DownloadError(
        f"{ref.name}: {what}, and a checksum is required (--require-checksum or "
        f"{REQUIRE_CHECKSUM_ENV}): pass --sha256 with the file's SHA-256 from a source you trust, or "
        "pull without requiring one to check the file against the hub's own checksum",
        "Unverified",
    )


def _disagreement(ref: ModelRef, remote: Remote) -> DownloadError | None:
    """The hub's checksum is not the one expected: say so before downloading anything."""
    if not (ref.sha256 and remote.sha256) or ref.sha256 == remote.sha256 or ref.kind == "url":
        return None
    where = f"{ref.repo}/{ref.file} at {ref.revision}"
    whose = {
        "given": "the --sha256 given",
        "verified": "the catalog's verified one",
        "unverified": "the catalog's (unverified) one",
    }[ref.checksum]
    advice = (
        "check the checksum you passed"
        if ref.checksum == "given"
        else f"to take the hub's file as it is, pull it as {ref.repo}:{ref.file}"
    )
    return DownloadError(
        f"the hub lists SHA-256 {remote.sha256} for {where}, not {whose} ({ref.sha256}); "
        f"nothing was downloaded; {advice}",
        "ChecksumMismatch",
    )


def endpoint_from_env() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def _hub_error(exc: Exception, ref: ModelRef, endpoint: str, token: str | None) -> DownloadError:
    """A hub failure as one line that says what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = ref.url or f"{endpoint}/{ref.repo}"
    if isinstance(exc, GatedRepoError):
        if token:
            return DownloadError(
                f"{ref.repo} is gated and the token given has no access to it: accept its terms at "
                f"{where} with the account the token belongs to",
                "Unauthorized",
            )
        return DownloadError(
            f"{ref.repo} is gated (HTTP 401 without a token): accept its terms at {where}, then set "
            "HF_TOKEN or run `hf auth login`",
            "Unauthorized",
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = "" if token else " (a private repository needs HF_TOKEN)"
        return DownloadError(f"repository {ref.repo} not found on {endpoint}{hint}", "NotFound")
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"revision {ref.revision!r} of {ref.repo} not found on {endpoint}", "NotFound")
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(f"{ref.file} not found in {ref.repo} at {ref.revision}", "NotFound")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 404:
            return DownloadError(f"{where}: not found (HTTP 404)", "NotFound")
        if status in (401, 403):
            return DownloadError(
                f"{where}: access refused (HTTP {status}); set HF_TOKEN to a token with access",
                "Unauthorized",
            )
        return DownloadError(f"{where}: the server answered HTTP {status}; try again later", "Unreachable")
    return DownloadError(f"cannot reach {where}: {exc}; check the network or HF_ENDPOINT", "Unreachable")


def _network_errors() -> tuple[type[Exception], ...]:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, httpx2.HTTPError)


def resolve_file(ref: ModelRef, endpoint: str, token: str | None) -> ModelRef:
    """``org/repo`` without a file: choose the GGUF from the repository's listing."""
    if ref.kind == "url" or ref.file:
        return ref
    from huggingface_hub import HfApi

    try:
        entries = HfApi(endpoint=endpoint, token=token or False).list_repo_tree(
            ref.repo, revision=ref.revision, recursive=True
        )
        files = [entry.path for entry in entries if hasattr(entry, "size")]
    except _network_errors() as exc:
        raise _hub_error(exc, ref, endpoint, token) from exc
    chosen = choose_gguf(files)
    if chosen is None:
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        if not ggufs:
            raise DownloadError(f"{ref.repo} holds no .gguf file; the CPU engine needs a GGUF", "NotFound")
        raise DownloadError(
            f"{ref.repo} holds several GGUFs and none is Q4_K_M: name one, for example "
            f"`kaito pull {ref.repo}:{ggufs[0]}` (files: {', '.join(ggufs[:6])})",
            "NotFound",
        )
    return replace(ref, file=chosen, quantization=quantization_of(chosen))


def remote_file(ref: ModelRef, endpoint: str, token: str | None) -> Remote:
    """Size, checksum and commit of the file, from a HEAD request to the hub (or the URL)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = ref.url or hf_hub_url(ref.repo, ref.file, revision=ref.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token or False, endpoint=endpoint)
    except _network_errors() as exc:
        raise _hub_error(exc, ref, endpoint, token) from exc
    etag = (meta.etag or "").lower()
    return Remote(
        url=meta.location or url,
        size=meta.size,
        sha256=etag if SHA256.match(etag) else None,
        commit=meta.commit_hash or "",
    )


@contextmanager
def _exclusive(directory: Path, name: str) -> Iterator[None]:
    """One pull of a model at a time: a second one is refused instead of writing the same part file."""
    with (directory / LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DownloadError(
                f"another `kaito pull {name}` is running; wait for it to finish", "Busy"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_disk(directory: Path, needed: int, keep_free: int) -> None:
    """Refuse a download the file system cannot hold while keeping ``keep_free`` bytes free."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free - needed < keep_free:
        raise DownloadError(
            f"not enough disk space in {directory}: the download needs {needed / GIB:.2f} GiB and "
            f"{keep_free / GIB:.2f} GiB must stay free, but only {free / GIB:.2f} GiB are free; "
            "free some space, remove a model with `kaito rm`, or set KAITO_HOME to a larger disk",
            "DiskFull",
        )


def pull(
    ref: ModelRef,
    store: ModelStore,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    keep_free: int = GIB,
    progress: ProgressFn | None = None,
    require_checksum: bool = False,
) -> tuple[StoredModel, bool]:
    """Download ``ref`` into ``store``; return the model and whether anything was downloaded.

    ``require_checksum`` refuses, before any request, a ``ref`` without a trusted checksum (a
    verified catalog entry or one given): see the module's notes.
    """
    from huggingface_hub import get_token
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    if require_checksum:
        _require_trusted(ref)
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    token = token or os.environ.get("HF_TOKEN") or get_token()
    ref = resolve_file(ref, endpoint, token)
    remote = remote_file(ref, endpoint, token)
    if ref.size is not None and remote.size is not None and ref.size != remote.size:
        raise DownloadError(
            f"{ref.repo}/{ref.file} is {remote.size} bytes on the hub but the catalog records {ref.size}: "
            "the file changed upstream; pull it as ORG/REPO:FILE.gguf to take the new one",
            "ChecksumMismatch",
        )
    disagreement = _disagreement(ref, remote)
    if disagreement is not None:
        raise disagreement
    expected = ref.sha256 or remote.sha256
    checked = {"verified": "catalog", "given": "given"}.get(ref.checksum) or (
        "hub" if remote.sha256 else ("catalog-unverified" if ref.sha256 else "")
    )
    existing = store.find(ref.name)
    if existing is not None and existing.path.is_file() and (expected is None or existing.sha256 == expected):
        return existing, False

    directory = store.directory(ref.name)
    final = directory / ref.file.rsplit("/", 1)[-1]
    part = final.with_name(final.name + PART_SUFFIX)
    size = remote.size if remote.size is not None else ref.size
    done = part.stat().st_size if part.is_file() else 0
    if size is not None and done > size:
        part.unlink()
        done = 0
    check_disk(directory, (size or 0) - done, keep_free)
    directory.mkdir(parents=True, exist_ok=True)

    with _exclusive(directory, ref.name):
        progressed = done

        def advance(n: int) -> None:
            nonlocal progressed
            progressed += n
            if progress is not None:
                progress(progressed, size)

        if progress is not None:
            progress(done, size)
        try:
            digest = fetch(
                remote.url,
                part,
                size=size,
                headers=build_hf_headers(token=token or False),
                endpoint=endpoint,
                on_bytes=advance,
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(
                    f"the disk filled up while writing {part}; free space and pull again to resume",
                    "DiskFull",
                ) from exc
            raise DownloadError(f"cannot write {part}: {exc}", "DiskFull") from exc
        if expected is not None and digest != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{final.name} failed its checksum: SHA-256 {digest} where {expected} was expected; "
                "the partial file was deleted, pull again to download it afresh",
                "ChecksumMismatch",
            )
        part.replace(final)
        try:
            info = gguf.describe(final)
        except InputError as exc:
            final.unlink(missing_ok=True)
            raise DownloadError(f"{ref.url or ref.repo}: {exc}; it cannot be served", "NotFound") from exc
        model = StoredModel(
            name=ref.name,
            file=final.name,
            path=final,
            size=final.stat().st_size,
            sha256=digest,
            quantization=info.quantization or ref.quantization or quantization_of(final.name),
            source=ref.kind,
            repo=ref.repo,
            revision=remote.commit or ref.revision,
            url=ref.url,
            preset=ref.preset,
            pulled_at=now_iso(),
            context_length=info.context_length,
            kv_bytes_per_token=info.kv_bytes_per_token,
            checked=checked,
        )
        return store.record(model), True
