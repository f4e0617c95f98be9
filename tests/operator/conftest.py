"""Fixtures for the operator tests: the Kubernetes emulator and the real operator in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.netutil import free_port
from tests.operator import chart
from tests.operator.cluster import eventually
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
    "pykaito.operator.webhook",
    "-m",
    "tests.operator.kopf_login",
]


def write_kubeconfig(
    path: Path, url: str, namespace: str = "default", token: str = chart.ADMIN_TOKEN
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def emulated_cluster(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *chart_values: str,
    with_nodeclaims: bool = True,
    kind: type[KubeEmulator] = KubeEmulator,
) -> AsyncIterator[KubeEmulator]:
    """The emulator under the rules of the chart rendered with ``chart_values``: the test itself is
    an admin (its kubeconfig and ``kube.request``), the operator its ServiceAccount."""
    objects = chart.render(*chart_values)
    emulator = kind(
        with_nodeclaims=with_nodeclaims,
        tokens=chart.tokens(objects),
        authorizer=chart.authorizer(objects),
        manifests=objects,
    )
    async with emulator, kmock.Server(emulator) as server:
        server.client.headers["Authorization"] = f"Bearer {chart.ADMIN_TOKEN}"
        url = str(server.url).rstrip("/")
        monkeypatch.setenv("PYKAITO_TEST_API_URL", url)
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", url)))
        operator_config = write_kubeconfig(tmp_path / "operator-kubeconfig", url, token=chart.OPERATOR_TOKEN)
        monkeypatch.setenv("PYKAITO_TEST_OPERATOR_KUBECONFIG", str(operator_config))
        yield emulator


@pytest.fixture
async def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeEmulator]:
    # the operator under test runs as one standalone process: the chart's one-replica rules
    # (two replicas add only the peering grants, which tests/operator/test_replicas.py covers)
    async with emulated_cluster(tmp_path, monkeypatch, "replicas=1") as emulator:
        yield emulator


@pytest.fixture
async def kube_without_nodeclaims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubeEmulator]:
    async with emulated_cluster(tmp_path, monkeypatch, "replicas=1", with_nodeclaims=False) as emulator:
        yield emulator


def operator_env(webhook_port: int) -> dict[str, str]:
    """What the operator runs with: its ServiceAccount's kubeconfig and its webhook on 127.0.0.1."""
    return {
        "KUBECONFIG": os.environ["PYKAITO_TEST_OPERATOR_KUBECONFIG"],
        "PYKAITO_TEST_API_TOKEN": chart.OPERATOR_TOKEN,
        "KAITO_OPERATOR_WEBHOOK_ENABLED": "true",
        "KAITO_OPERATOR_WEBHOOK_INSECURE": "true",
        "KAITO_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
        "KAITO_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "KAITO_OPERATOR_WEBHOOK_PORT": str(webhook_port),
    }


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def running_operator(kube: KubeEmulator, *extra: str) -> AsyncIterator[KopfRunner]:
    """The real operator in its own thread, as its ServiceAccount, its webhook registered with the
    emulator as the chart registers it while it serves; stopped from a worker thread so this loop
    keeps serving. The environment is the operator's while it runs (the test plays an admin only
    through ``kube.request``)."""
    port = free_port()
    env = operator_env(port)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    runner = KopfRunner([*OPERATOR_ARGS, *extra], timeout=30)
    runner.__enter__()
    try:
        await eventually(lambda: _listening(port), timeout=30)
        kube.admission.register(kube.manifests)
        kube.admission.routes[chart.webhook_service(kube.manifests)] = f"http://127.0.0.1:{port}"
        yield runner
    finally:
        kube.admission.unregister()
        try:
            await asyncio.to_thread(runner.__exit__, None, None, None)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def operator_factory(request: pytest.FixtureRequest) -> Callable[..., Any]:
    name = "kube_without_nodeclaims" if "kube_without_nodeclaims" in request.fixturenames else "kube"
    kube = request.getfixturevalue(name)
    return functools.partial(running_operator, kube)


@pytest.fixture
async def operator(kube: KubeEmulator) -> AsyncIterator[KopfRunner]:
    async with running_operator(kube) as runner:
        yield runner
