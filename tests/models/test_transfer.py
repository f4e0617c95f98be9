"""The download pipeline (receive, write, hash on three threads) against the stand-in hub on 127.0.0.1.

Every failure leaves either nothing or a ``.part`` that is an exact prefix of the file, never a model;
every success is checked against the whole file's SHA-256, resumed bytes included.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from pykaito.catalog import load_catalog
from pykaito.errors import DownloadError
from pykaito.models import ModelStore, parse_ref, pull, transfer
from tests.models.conftest import PRESET
from tests.models.hubstub import Hub
from tests.models.test_pull import EMBEDDED_SHA, content_gets

MIB = 1024 * 1024
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def aligned(n: int) -> int:
    """Where a resumed pull asks from: the part is cut back to a 4 KiB boundary."""
    return n - n % transfer.ALIGN


def part_path() -> Path:
    return ModelStore().directory(PRESET) / (FILE + ".part")


def write_part(data: bytes) -> Path:
    part = part_path()
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


def assert_no_model() -> None:
    directory = ModelStore().directory(PRESET)
    assert ModelStore().models() == []
    assert not (directory / "model.json").exists() and not (directory / FILE).exists()


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("pull-write", "pull-hash")]


def pull_preset() -> tuple[object, bool]:
    return pull(parse_ref(PRESET, load_catalog()), ModelStore())


def test_one_byte_damaged_mid_stream_fails_the_checksum_and_leaves_nothing(hub: Hub, gguf: Path) -> None:
    hub.flip_at[EMBEDDED_SHA] = gguf.stat().st_size // 2 + 12345  # right size, one byte wrong
    mismatch = r"failed its checksum: SHA-256 [0-9a-f]{64} where b179c952"
    with pytest.raises(DownloadError, match=mismatch) as failure:
        pull_preset()
    assert failure.value.reason == "ChecksumMismatch"
    assert not part_path().exists()
    assert_no_model()
    assert pipeline_threads() == []


def test_a_resumed_pull_asks_for_the_rest_and_checks_the_whole_file(hub: Hub, gguf: Path) -> None:
    data = gguf.read_bytes()
    half = len(data) // 2 + 7  # not on a buffer boundary
    write_part(data[:half])
    model, downloaded = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert downloaded and model.sha256 == EMBEDDED_SHA and model.checked == "catalog"
    assert model.path.read_bytes() == data and not part_path().exists()
    assert half % transfer.ALIGN and [r[2] for r in content_gets(hub)] == [f"bytes={aligned(half)}-"]


def test_a_damaged_partial_file_fails_after_resuming_and_the_next_pull_starts_afresh(
    hub: Hub, gguf: Path
) -> None:
    data = bytearray(gguf.read_bytes())
    half = len(data) // 2
    data[1000] ^= 0xFF  # damage in the part an earlier pull left
    write_part(bytes(data[:half]))
    with pytest.raises(DownloadError, match="failed its checksum") as failure:
        pull_preset()
    assert failure.value.reason == "ChecksumMismatch"
    assert not part_path().exists()
    assert_no_model()
    model, downloaded = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert downloaded and model.sha256 == EMBEDDED_SHA
    assert [r[2] for r in content_gets(hub)] == [f"bytes={aligned(half)}-", ""]


def test_a_server_that_ignores_range_is_downloaded_again_from_the_start(hub: Hub, gguf: Path) -> None:
    data = gguf.read_bytes()
    write_part(b"\x00" * (len(data) // 3))  # whatever the part holds, it is replaced
    hub.ignore_range = True
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA and model.path.read_bytes() == data
    assert content_gets(hub)[0][2] == f"bytes={aligned(len(data) // 3)}-"


def test_a_connection_cut_mid_body_keeps_the_prefix_and_the_next_pull_resumes(hub: Hub, gguf: Path) -> None:
    data = gguf.read_bytes()
    hub.cut_after = 8 * MIB + 3
    cut = r"closed at 8388611 of \d+ bytes; pull again to resume"
    with pytest.raises(DownloadError, match=cut) as failure:
        pull_preset()
    assert failure.value.reason == "Unreachable"
    assert part_path().read_bytes() == data[: 8 * MIB + 3]
    assert_no_model()
    hub.cut_after = None
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA
    assert [r[2] for r in content_gets(hub)] == ["", f"bytes={8 * MIB}-"]


def test_a_full_disk_mid_stream_stops_the_pull_with_an_exact_prefix(
    hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing on the writer thread reaches the caller as DiskFull; nothing waits forever."""
    data = gguf.read_bytes()
    real = transfer._pwrite
    room = [20 * MIB]

    def full_disk(fd: int, view: memoryview, offset: int) -> int:
        if len(view) > room[0]:
            real(fd, view[: room[0]], offset)
            room[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= len(view)
        return real(fd, view, offset)

    monkeypatch.setattr(transfer, "_pwrite", full_disk)
    full = r"the disk filled up while writing .*pull again to resume"
    with pytest.raises(DownloadError, match=full) as failure:
        pull_preset()
    assert failure.value.reason == "DiskFull"
    assert part_path().read_bytes() == data[: 20 * MIB]
    assert_no_model()
    assert pipeline_threads() == []
    monkeypatch.setattr(transfer, "_pwrite", real)
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA and model.path.read_bytes() == data


def test_an_interrupted_pull_writes_what_it_received_and_stops_its_threads(hub: Hub, gguf: Path) -> None:
    data = gguf.read_bytes()

    def stop_at_16_mib(done: int, _total: int | None) -> None:
        if done >= 16 * MIB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(parse_ref(PRESET, load_catalog()), ModelStore(), progress=stop_at_16_mib)
    kept = part_path().read_bytes()
    assert 16 * MIB <= len(kept) < len(data) and kept == data[: len(kept)]
    assert_no_model()
    assert pipeline_threads() == []
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA
    assert content_gets(hub)[-1][2] == f"bytes={aligned(len(kept))}-"


def test_a_complete_part_is_hashed_without_a_request(hub: Hub, gguf: Path) -> None:
    write_part(gguf.read_bytes())
    model, downloaded = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert downloaded and model.sha256 == EMBEDDED_SHA and content_gets(hub) == []


def test_the_writer_starts_writeback_of_contiguous_ranges_after_the_resumed_prefix(
    hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gguf.read_bytes()
    prefix = 5 * MIB + 11
    write_part(data[:prefix])
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(
        transfer, "_start_writeback", lambda _fd, offset, length: ranges.append((offset, length))
    )
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA
    assert ranges[0][0] == aligned(prefix) and all(length >= transfer.WRITEBACK for _, length in ranges)
    assert all(a + n == b for (a, n), (b, _) in pairwise(ranges))
    assert len(data) - transfer.WRITEBACK < ranges[-1][0] + ranges[-1][1] <= len(data)


Write = tuple[bool, int, int]


def record_writes(monkeypatch: pytest.MonkeyPatch, refuse_direct: bool = False) -> list[Write]:
    """(direct?, offset, length) of every write; ``refuse_direct``: direct writes fail as on a file
    system that opens O_DIRECT but refuses it (EINVAL)."""
    writes: list[Write] = []
    real = transfer._pwrite

    def spy(fd: int, view: memoryview, offset: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))
        if direct and refuse_direct:
            writes.append((True, offset, 0))
            raise OSError(errno.EINVAL, "Invalid argument")
        written = real(fd, view, offset)
        writes.append((direct, offset, written))
        return written

    monkeypatch.setattr(transfer, "_pwrite", spy)
    return writes


def direct_io_here(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.touch()
    fd = transfer._open_direct(probe)
    if fd is None:
        return False
    os.close(fd)
    return True


def test_whole_buffers_go_to_disk_directly_and_the_tail_through_the_page_cache(
    hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not direct_io_here(tmp_path):
        pytest.skip("the file system under the test's directory has no O_DIRECT")
    writes = record_writes(monkeypatch)
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA and model.path.read_bytes() == gguf.read_bytes()
    size = gguf.stat().st_size
    assert all(direct and length % transfer.ALIGN == 0 for direct, _, length in writes[:-1])
    assert writes[-1] == (False, writes[-1][1], size - writes[-1][1]) and size % transfer.ALIGN
    assert sum(length for _, _, length in writes) == size


def test_without_direct_io_every_write_goes_through_the_page_cache(
    hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "_open_direct", lambda _path: None)
    writes = record_writes(monkeypatch)
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA and model.path.read_bytes() == gguf.read_bytes()
    assert writes and not any(direct for direct, _, _ in writes)


def test_direct_writes_refused_by_the_file_system_fall_back_to_the_page_cache(
    hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not direct_io_here(tmp_path):
        pytest.skip("the file system under the test's directory has no O_DIRECT")
    writes = record_writes(monkeypatch, refuse_direct=True)
    model, _ = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert model.sha256 == EMBEDDED_SHA and model.path.read_bytes() == gguf.read_bytes()
    assert [w for w in writes if w[0]] == [(True, 0, 0)]  # tried once, then never again
    assert sum(length for _, _, length in writes) == gguf.stat().st_size
