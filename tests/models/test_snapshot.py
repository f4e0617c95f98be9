"""The weight cache's downloader against the stand-in hub: every file of a repository, checked, resumable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pykaito.errors import DownloadError
from pykaito.models.snapshot import MARKER, MODEL_DIR, download_snapshot
from tests.models.hubstub import Hub


@pytest.fixture
def repo(hub: Hub, tmp_path: Path, gguf: Path) -> dict[str, Path]:
    files = {
        "config.json": tmp_path / "config.json",
        "model.safetensors": gguf,
        "sub/tokenizer.json": tmp_path / "tokenizer.json",
        "original/consolidated.pth": tmp_path / "consolidated.pth",
    }
    files["config.json"].write_text('{"model_type": "llama"}')
    files["sub/tokenizer.json"].write_text('{"version": "1.0"}')
    files["original/consolidated.pth"].write_bytes(b"duplicate checkpoint")
    hub.add("acme/tiny", files)
    return files


def content_gets(hub: Hub) -> list[str]:
    return [r[1] for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]


def test_downloads_every_file_once_then_nothing(hub: Hub, repo: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    seen: list[tuple[int, int]] = []
    snapshot = download_snapshot("acme/tiny", "main", dest, progress=lambda d, t: seen.append((d, t)))
    expected = sum(p.stat().st_size for name, p in repo.items() if not name.startswith("original/"))
    assert snapshot.size == expected and snapshot.downloaded == expected
    assert sorted(snapshot.files) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert snapshot.commit == hashlib.sha1(b"acme/tiny").hexdigest()
    for name in snapshot.files:
        assert (dest / MODEL_DIR / name).read_bytes() == repo[name].read_bytes()
    assert not (dest / MODEL_DIR / "original").exists()
    assert not list(dest.rglob("*.part"))
    assert seen[0] == (0, expected) and seen[-1] == (expected, expected)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert json.loads((dest / MARKER).read_text())["commit"] == snapshot.commit
    before = len(content_gets(hub))
    again = download_snapshot("acme/tiny", "main", dest)
    assert again.downloaded == 0 and len(content_gets(hub)) == before


def test_corrupted_file_is_refused_and_no_marker_written(
    hub: Hub, repo: dict[str, Path], tmp_path: Path
) -> None:
    hub.corrupt.add(hub.sha_of(repo["model.safetensors"]))
    with pytest.raises(DownloadError, match="failed its checksum") as failure:
        download_snapshot("acme/tiny", "main", tmp_path / "cache")
    assert failure.value.reason == "ChecksumMismatch"
    assert not (tmp_path / "cache" / MARKER).exists()
    assert not (tmp_path / "cache" / MODEL_DIR / "model.safetensors").exists()


def test_gated_without_token_is_unauthorized(hub: Hub, gguf: Path, tmp_path: Path) -> None:
    hub.add("meta/gated", {"model.safetensors": gguf}, gated=True)
    with pytest.raises(DownloadError) as failure:
        download_snapshot("meta/gated", "main", tmp_path / "cache")
    assert failure.value.reason == "Unauthorized"
    assert not content_gets(hub)


def test_entry_point_writes_the_result_and_never_the_token(
    hub: Hub, gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    hub.add("meta/gated", {"model.safetensors": gguf}, gated=True)
    hub.tokens.add("hf_secret_value")
    result_file = tmp_path / "result.json"
    argv = [sys.executable, "-m", "pykaito.models.snapshot", "--repo", "meta/gated", "--dest"]
    argv += [str(tmp_path / "cache"), "--result-file", str(result_file)]
    denied = subprocess.run(
        argv, env={**env, "HF_TOKEN": "hf_wrong"}, capture_output=True, text=True, timeout=120
    )
    assert denied.returncode == 1
    failed = json.loads(result_file.read_text())
    assert failed["ok"] is False and failed["reason"] == "Unauthorized"
    assert "hf_wrong" not in denied.stdout + denied.stderr
    done = subprocess.run(
        argv, env={**env, "HF_TOKEN": "hf_secret_value"}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(result_file.read_text())
    assert outcome["ok"] is True and outcome["bytes"] == gguf.stat().st_size and outcome["files"] == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {"done": 0, "total": gguf.stat().st_size}
    assert {"done": gguf.stat().st_size, "total": gguf.stat().st_size} in lines
    assert "hf_secret_value" not in done.stdout + done.stderr


def test_an_image_without_the_hub_extra_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pykaito.models.snapshot import main

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    result_file = tmp_path / "result.json"
    code = main(["--repo", "acme/tiny", "--dest", str(tmp_path / "cache"), "--result-file", str(result_file)])
    assert code == 1
    result = json.loads(result_file.read_text())
    assert result["ok"] is False and result["reason"] == "MissingDependency"
    assert "pykaito[hub]" in result["message"] and "weightCache.downloaderImage" in result["message"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_a_pods_init_container_downloads_into_its_volume_once(
    hub: Hub, repo: dict[str, Path], tmp_path: Path, env: dict[str, str]
) -> None:
    """ReadWriteOnce: the command the StatefulSet's init container runs, as rendered; run again on
    the same volume (the pod restarted, its claim kept) it downloads nothing."""
    from pykaito.api.types import Workspace
    from pykaito.manifests import Images
    from pykaito.manifests.weight_cache import WeightCache, WeightCacheSettings, init_container

    workspace = Workspace.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "tiny", "namespace": "default"},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
    )
    commit = hashlib.sha1(b"acme/tiny").hexdigest()
    settings = WeightCacheSettings(access_mode="ReadWriteOnce")
    cache = WeightCache("kaito-weights-acme-tiny", "default", "acme/tiny", commit, 1, settings)
    container = init_container(cache, workspace, Images())
    assert container is not None
    volume, result = tmp_path / "pvc", tmp_path / "termination-log"
    argv = [
        str(volume) if a == "/mnt/weight-cache" else str(result) if a == "/dev/termination-log" else a
        for a in container["command"]
    ]
    assert argv[:3] == ["python3", "-m", "pykaito.models.snapshot"]
    argv[0] = sys.executable
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    fetched = len(content_gets(hub))
    assert fetched == 3 and json.loads(result.read_text())["commit"] == commit
    assert (volume / MODEL_DIR / "model.safetensors").read_bytes() == repo["model.safetensors"].read_bytes()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(content_gets(hub)) == fetched  # the marker says complete: not one byte again
    assert json.loads(result.read_text())["ok"] is True
