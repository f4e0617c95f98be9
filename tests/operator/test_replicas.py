"""Two operator processes with peering: one acts, the other waits, and takes over when the first dies."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import kmock
import pytest
import yaml

from tests.operator.cluster import WS_PATH, call, example, objects
from tests.operator.faults import FaultyKube
from tests.operator.killloop import _kubeconfig, operator_env, start_operator, stop
from tests.operator.kube_emulator import NODECLAIMS

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
LIFETIME = 3  # seconds: KAITO_OPERATOR_PEERING_LIFETIME_SECONDS in these tests


def workspace(name: str) -> dict[str, object]:
    ws = example("workspace-phi-4-mini-h100.yaml")
    ws["metadata"] = {"name": name, "namespace": "default"}
    return ws


def claims_of(kube: FaultyKube, name: str) -> list[dict[str, object]]:
    return [c for c in objects(kube, NODECLAIMS) if c["metadata"]["labels"]["kaito.sh/workspace"] == name]


def _acting(log: str) -> bool:
    """Whether kopf's last word on peering in this log is that it resumed."""
    resumed, paused = log.rfind("Resuming operations"), log.rfind("Pausing operations")
    return resumed > paused


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if "aiohttp.access" not in line]
    return "\n".join(lines[-25:])


async def until(check: object, timeout: float) -> float:  # noqa: ASYNC109
    """Seconds until ``check()`` holds (fails the test past ``timeout``)."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.timeout(240)
async def test_one_replica_acts_and_the_other_takes_over_when_it_is_killed(tmp_path: Path) -> None:
    async with FaultyKube() as kube, kmock.Server(kube) as server:
        # the chart installs the peering resource and object; the emulator plays that part here
        kube.declare(PEERINGS, "ClusterKopfPeering", namespaced=False, subresources=set())
        await call(kube, "POST", "/apis/kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": "pykaito"}})
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump(_kubeconfig(str(server.url).rstrip("/"))))
        env = {**operator_env(config), "KAITO_OPERATOR_PEERING_LIFETIME_SECONDS": str(LIFETIME)}
        logs = {"first": tmp_path / "first.log", "second": tmp_path / "second.log"}
        first = await start_operator(env, logs["first"], "--peering", "--priority", "200")
        second = await start_operator(env, logs["second"], "--peering", "--priority", "100")
        try:

            def peers() -> int:
                body = kube.objects[(kmock.resource(PEERINGS), None, "pykaito")].raw
                return len(body.get("status") or {})

            await until(lambda: peers() == 2, timeout=60)
            # the lower priority stands by: it starts paused, or pauses as soon as it sees the other
            second_log = logs["second"]
            await until(lambda: not _acting(second_log.read_text()), timeout=30)

            await call(kube, "POST", WS_PATH.format(ns="default"), workspace("before"))
            await until(lambda: claims_of(kube, "before"), timeout=30)
            await until(lambda: "[default/before]" in logs["first"].read_text(), timeout=30)
            assert "[default/" not in logs["second"].read_text()  # the standby handled nothing

            first.send_signal(signal.SIGKILL)
            await first.wait()
            killed = time.monotonic()
            await call(kube, "POST", WS_PATH.format(ns="default"), workspace("after"))
            await until(lambda: claims_of(kube, "after"), timeout=60)
            takeover = time.monotonic() - killed
            print(f"takeover after SIGKILL: {takeover:.1f}s (peering lifetime {LIFETIME}s)")
            assert takeover < LIFETIME + 15  # the lifetime, plus generous slack for a busy machine
            await until(lambda: "[default/after]" in second_log.read_text(), timeout=30)  # it was the second
            assert len(claims_of(kube, "before")) == 1 and len(claims_of(kube, "after")) == 1
        except AssertionError as exc:
            tails = "\n".join(f"--- {k}:\n{_tail(v)}" for k, v in logs.items())
            raise AssertionError(f"{exc}\n{tails}") from exc
        finally:
            await stop(first, signal.SIGKILL)
            await stop(second)
        assert second.returncode == 0, logs["second"].read_text()[-3000:]
