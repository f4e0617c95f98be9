"""The operator killed (SIGKILL) at random points of its reconciles, again and again.

Each round starts ``python -m pykaito.operator`` against the emulator, lets it make a random number of
writes (0 to a dozen: finalizers, NodeClaims, children, status), kills it with SIGKILL mid-flight,
then plays the cluster (Karpenter launches the NodeClaims' nodes, the StatefulSet controller runs the
pods) and changes the Workspaces (one deleted, one created, every few rounds). After the last round an
operator runs to the end and everything must converge: every remaining Workspace Ready with exactly
its NodeClaims and children, every deleted one gone (none stuck on its finalizer).

Used by tests/operator/test_kill_loop.py (a few rounds) and bench/reliability_operator.py (50).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.operator.cluster import (
    WS_PATH,
    call,
    condition,
    example,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
)
from tests.operator.faults import FaultyKube
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES

ROOT = Path(__file__).resolve().parents[2]
SEED = "workspace-phi-4-mini-h100.yaml"
STATEFULSETS = "apps/v1/statefulsets"
FAST = {
    "KAITO_OPERATOR_RESYNC_SECONDS": "1.0",
    "KAITO_OPERATOR_WAIT_INITIAL_SECONDS": "0.2",
    "KAITO_OPERATOR_WAIT_MAX_SECONDS": "1.0",
    "KAITO_OPERATOR_ERROR_BACKOFF_SECONDS": "0.2",
    "KAITO_OPERATOR_METRICS_PORT": "0",
}


@dataclass
class KillLoopResult:
    kills: int = 0
    writes_before_kill: list[int] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    converge_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # empty: converged with nothing wrong
    kill_points: Counter[str] = field(default_factory=Counter)  # the write each kill came at

    @property
    def ok(self) -> bool:
        return not self.problems


def _workspace(name: str) -> dict[str, Any]:
    ws = example(SEED)
    ws["metadata"] = {"name": name, "namespace": "default"}
    return ws


def operator_env(kubeconfig: Path) -> dict[str, str]:
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        **FAST,
        "PYTHONUNBUFFERED": "1",  # log lines reach the file as they happen
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": f"{src}{os.pathsep}{ROOT}{os.pathsep}{path}" if path else f"{src}{os.pathsep}{ROOT}",
    }


async def start_operator(env: dict[str, str], log: Path, *extra: str) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "pykaito.operator", "--all-namespaces", "--liveness-port", "0", *extra]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*command, env=env, stdout=out, stderr=out)


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def play_cluster(kube: FaultyKube) -> None:
    """Karpenter and the StatefulSet controller: nodes for new NodeClaims, Ready pods for StatefulSets."""
    await launch_nodeclaims(kube)
    for sts in objects(kube, STATEFULSETS):
        name = sts["metadata"]["name"]
        ws = live(kube, WORKSPACES, "default", name)
        if ws is None or ws["metadata"].get("deletionTimestamp"):
            continue
        if not (sts.get("status") or {}).get("readyReplicas"):
            await run_pods(kube, name)


def check(kube: FaultyKube, alive: set[str], deleted: set[str]) -> list[str]:
    """What is wrong with the cluster now, compared with the Workspaces that should exist."""
    problems = []
    for name in sorted(deleted):
        if live(kube, WORKSPACES, "default", name) is not None:
            problems.append(f"workspace {name} was deleted but is still there (stuck deletion)")
    claims = Counter(
        str((c["metadata"].get("labels") or {}).get("kaito.sh/workspace")) for c in objects(kube, NODECLAIMS)
    )
    for name in sorted(alive):
        ws = live(kube, WORKSPACES, "default", name)
        if ws is None:
            problems.append(f"workspace {name} is gone")
            continue
        target = int((ws.get("status") or {}).get("targetNodeCount") or 1)
        if claims[name] != target:
            problems.append(f"workspace {name} has {claims[name]} NodeClaims, expected {target}")
        if condition(ws, "WorkspaceSucceeded").get("status") != "True":
            problems.append(f"workspace {name} is not Ready: {(ws.get('status') or {}).get('conditions')}")
    for name in sorted(set(claims) - alive):
        problems.append(f"{claims[name]} NodeClaim(s) left for deleted workspace {name}")
    sts = Counter(s["metadata"]["name"] for s in objects(kube, STATEFULSETS))
    services = Counter(s["metadata"]["name"] for s in objects(kube, "v1/services"))
    for name in sorted(alive):
        if sts[name] != 1:
            problems.append(f"workspace {name} has {sts[name]} StatefulSets")
        if services[name] != 1 or services[f"{name}-headless"] != 1:
            problems.append(f"workspace {name} services: {services[name]} + {services[f'{name}-headless']}")
    return problems


async def kill_loop(
    kube: FaultyKube,
    url: str,
    workdir: Path,
    *,
    kills: int,
    workspaces: int = 3,
    seed: int = 0,
    converge_timeout: float = 120.0,
) -> KillLoopResult:
    rng = random.Random(seed)
    result = KillLoopResult()
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(_kubeconfig(url)))
    env, log = operator_env(kubeconfig), workdir / "operator.log"
    alive: set[str] = set()
    deleted: set[str] = set()
    serial = 0

    async def create() -> None:
        nonlocal serial
        name = f"kill-{serial}"
        serial += 1
        await call(kube, "POST", WS_PATH.format(ns="default"), _workspace(name))
        alive.add(name)
        result.created.append(name)

    async def delete() -> None:
        name = rng.choice(sorted(alive))
        await call(kube, "DELETE", f"{WS_PATH.format(ns='default')}/{name}")
        alive.discard(name)
        deleted.add(name)
        result.deleted.append(name)

    writes, target = 0, 0
    process: asyncio.subprocess.Process | None = None
    killed = asyncio.Event()

    def counted(method: str, path: str) -> None:
        """Kill the operator the moment it sends its ``target``-th write (the write still lands)."""
        nonlocal writes
        writes += 1
        if target and writes >= target and process is not None and not killed.is_set():
            result.kill_points[f"{method} {_kind(path)}"] += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            killed.set()

    for _ in range(workspaces):
        await create()
    for round_ in range(kills):
        target = rng.randint(0, 12)  # 0: killed at a random moment, maybe before its first write
        writes = 0
        killed.clear()
        kube.on_write = counted
        process = await start_operator(env, log)
        wait = rng.uniform(0.5, 4.0) if target == 0 else 8.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(killed.wait(), wait)
        result.writes_before_kill.append(writes)
        await stop(process, signal.SIGKILL)
        result.kills += 1
        kube.on_write = None
        await play_cluster(kube)
        if round_ % 4 == 3 and alive:
            await delete()
        if round_ % 4 == 1:
            await create()

    process = await start_operator(env, log)
    started = time.monotonic()
    try:
        while True:
            await play_cluster(kube)
            problems = check(kube, alive, deleted)
            if not problems or time.monotonic() - started > converge_timeout:
                break
            await asyncio.sleep(0.2)
        result.converge_seconds = time.monotonic() - started
        result.problems = problems
    finally:
        await stop(process)
    if process.returncode not in (0, None):
        result.problems.append(f"the last operator exited with {process.returncode}; see {log}")
    return result


def _kind(path: str) -> str:
    """``/api/v1/namespaces/default/pods/x/status`` -> ``pods/status``: what a write was to."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    return "/".join([parts[0], *parts[2:]]) if parts else path


def _kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "emulator",
    }
