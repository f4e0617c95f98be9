"""Two operator processes with peering against one emulator: what the replica tests share."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import kmock
import yaml

from tests.operator.cluster import call
from tests.operator.faults import FaultyKube
from tests.operator.killloop import _kubeconfig, operator_env, start_operator, stop

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
LIFETIME = 3  # seconds: KAITO_OPERATOR_PEERING_LIFETIME_SECONDS in these tests


def _acting(log: str) -> bool:
    """Whether kopf's last word on peering in this log is that it resumed."""
    resumed, paused = log.rfind("Resuming operations"), log.rfind("Pausing operations")
    return resumed > paused


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if "aiohttp.access" not in line]
    return "\n".join(lines[-25:])


async def until(check: Callable[[], object], timeout: float) -> float:  # noqa: ASYNC109
    """Seconds until ``check()`` holds (fails the test past ``timeout``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Peers:
    kube: FaultyKube
    first: asyncio.subprocess.Process  # priority 200: the acting replica
    second: asyncio.subprocess.Process  # priority 100: standing by
    logs: dict[str, Path]


@asynccontextmanager
async def two_peers(tmp_path: Path, env: dict[str, str] | None = None) -> AsyncIterator[Peers]:
    """Two operators with peering, the first acting and the second standing by.

    A failed assertion inside gets both logs' tails; on leaving, the first is killed and the
    second must have stopped cleanly.
    """
    async with FaultyKube() as kube, kmock.Server(kube) as server:
        # the chart installs the peering resource and object; the emulator plays that part here
        kube.declare(PEERINGS, "ClusterKopfPeering", namespaced=False, subresources=set())
        await call(kube, "POST", "/apis/kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": "pykaito"}})
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump(_kubeconfig(str(server.url).rstrip("/"))))
        full_env = {
            **operator_env(config),
            "KAITO_OPERATOR_PEERING_LIFETIME_SECONDS": str(LIFETIME),
            **(env or {}),
        }
        logs = {"first": tmp_path / "first.log", "second": tmp_path / "second.log"}
        first = await start_operator(full_env, logs["first"], "--peering", "--priority", "200")
        second = await start_operator(full_env, logs["second"], "--peering", "--priority", "100")
        try:

            def peers() -> int:
                body = kube.objects[(kmock.resource(PEERINGS), None, "pykaito")].raw
                return len(body.get("status") or {})

            await until(lambda: peers() == 2, timeout=60)
            # the lower priority stands by: it starts paused, or pauses as soon as it sees the other
            await until(lambda: not _acting(logs["second"].read_text()), timeout=30)
            yield Peers(kube, first, second, logs)
        except AssertionError as exc:
            tails = "\n".join(f"--- {k}:\n{_tail(v)}" for k, v in logs.items())
            raise AssertionError(f"{exc}\n{tails}") from exc
        finally:
            await stop(first, signal.SIGKILL)
            await stop(second)
        assert second.returncode == 0, logs["second"].read_text()[-3000:]
