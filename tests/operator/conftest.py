"""Fixtures for the operator tests: the Kubernetes emulator and the real operator in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.operator.kube_emulator import KubeEmulator

# Short timers and backoffs so that each test converges in a second or two. kopf reads timer
# intervals when the handlers are imported, so these are set before any test imports them.
FAST = {
    "KAITO_OPERATOR_RESYNC_SECONDS": "1.0",
    "KAITO_OPERATOR_WAIT_INITIAL_SECONDS": "0.2",
    "KAITO_OPERATOR_WAIT_MAX_SECONDS": "1.0",
    "KAITO_OPERATOR_ERROR_BACKOFF_SECONDS": "0.2",
    "KAITO_OPERATOR_METRICS_PORT": "0",
}
os.environ.update(FAST)

OPERATOR_ARGS = [
    "run",
    "--standalone",
    "--all-namespaces",
    "-m",
    "pykaito.operator.handlers",
    "-m",
    "tests.operator.kopf_login",
]


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        monkeypatch.setenv("PYKAITO_TEST_API_URL", url)
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", url)))
        yield emulator


@pytest.fixture
async def kube_without_nodeclaims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(with_nodeclaims=False) as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        monkeypatch.setenv("PYKAITO_TEST_API_URL", url)
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", url)))
        yield emulator


@contextlib.asynccontextmanager
async def running_operator(*extra: str) -> AsyncIterator[KopfRunner]:
    """The real operator in its own thread; stopped from a worker thread so this loop keeps serving."""
    runner = KopfRunner([*OPERATOR_ARGS, *extra], timeout=30)
    runner.__enter__()
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


@pytest.fixture
def operator_factory() -> Callable[..., Any]:
    return running_operator


@pytest.fixture
async def operator(kube: KubeEmulator) -> AsyncIterator[KopfRunner]:
    async with running_operator() as runner:
        yield runner
