"""Operator at scale: N Workspaces created at once against the Kubernetes emulator.

The operator runs as its own process (``python -m pykaito.operator``); this script serves the
emulated API server and plays the cluster (Karpenter makes every NodeClaim's node Ready, the
StatefulSet controller and kubelet make every pod Ready). It reports:

- workspaces/second from the first create to the last Workspace Ready;
- p50/p95 latency from a Workspace's create to its children (the StatefulSet) existing, and to Ready;
- the operator's peak RSS (VmHWM);

and, as a baseline measured in the same run, the same latencies for a single Workspace.

    .venv/bin/python bench/operator_scale.py            # 200 Workspaces
    .venv/bin/python bench/operator_scale.py --count 50
    .venv/bin/python bench/operator_scale.py --inferencesets 50 --set-replicas 4

The InferenceSet case creates the sets at once and reports the time until every replica Workspace
exists and until every set reports all its replicas ready, and the operator's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import kmock
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.cluster import call, objects  # noqa: E402
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES, KubeEmulator  # noqa: E402

SEED = yaml.safe_load((ROOT / "examples" / "workspace-phi-4-mini-h100.yaml").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(path: Path, url: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": url}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "current-context": "bench",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    """Plays Karpenter, the StatefulSet controller and the kubelet; records when things appear."""

    def __init__(self, kube: KubeEmulator) -> None:
        self.kube = kube
        self.children_at: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        self._claims: set[str] = set()
        self._sets: set[str] = set()

    async def run(self) -> None:
        while True:
            for claim in objects(self.kube, NODECLAIMS):
                name = claim["metadata"]["name"]
                if name not in self._claims:
                    self._claims.add(name)
                    await self._launch(name, claim["metadata"].get("labels") or {})
            for sts in objects(self.kube, "apps/v1/statefulsets"):
                name, namespace = sts["metadata"]["name"], sts["metadata"]["namespace"]
                if name not in self._sets:
                    self._sets.add(name)
                    self.children_at[name] = time.perf_counter()
                    await self._run_pod(namespace, name)
            for ws in objects(self.kube, WORKSPACES):
                name = ws["metadata"]["name"]
                if name not in self.ready_at and (ws.get("status") or {}).get("state") == "Ready":
                    self.ready_at[name] = time.perf_counter()
            await asyncio.sleep(0.05)

    async def _launch(self, claim: str, labels: dict[str, str]) -> None:
        node = f"node-{claim}"
        await call(self.kube, "POST", "/api/v1/nodes", {"metadata": {"name": node, "labels": labels}})
        ready = [{"type": "Ready", "status": "True"}]
        status = {"capacity": {"nvidia.com/gpu": "1"}, "conditions": ready}
        await call(self.kube, "PATCH", f"/api/v1/nodes/{node}/status", {"status": status})
        claim_status = {"nodeName": node, "conditions": ready}
        await call(
            self.kube, "PATCH", f"/apis/karpenter.sh/v1/nodeclaims/{claim}/status", {"status": claim_status}
        )

    async def _run_pod(self, namespace: str, workspace: str) -> None:
        pod = {"metadata": {"name": f"{workspace}-0", "labels": {"kaito.sh/workspace": workspace}}}
        await call(self.kube, "POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        await call(
            self.kube,
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{workspace}-0/status",
            {"status": status},
        )
        sts_status = {"replicas": 1, "readyReplicas": 1}
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{workspace}/status"
        await call(self.kube, "PATCH", path, {"status": sts_status})


async def create_all(kube: KubeEmulator, names: list[str]) -> dict[str, float]:
    created: dict[str, float] = {}

    async def one(name: str) -> None:
        body = {**SEED, "metadata": {"name": name}}
        created[name] = time.perf_counter()
        await call(kube, "POST", "/apis/kaito.sh/v1beta1/namespaces/default/workspaces", body)

    await asyncio.gather(*(one(n) for n in names))
    return created


async def wait_ready(cluster: Cluster, names: list[str], limit: float) -> None:
    deadline = time.perf_counter() + limit
    while not all(n in cluster.ready_at for n in names):
        if time.perf_counter() > deadline:
            done = sum(n in cluster.ready_at for n in names)
            raise SystemExit(f"only {done}/{len(names)} Workspaces Ready after {limit:.0f}s")
        await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


SET_PATH = "/apis/kaito.sh/v1beta1/namespaces/default/inferencesets"


def set_body(name: str, replicas: int) -> dict[str, object]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": name}},
            "template": {
                "resource": {"instanceType": SEED["resource"]["instanceType"]},
                "inference": SEED["inference"],
            },
        },
    }


async def start_operator(url: str) -> tuple[asyncio.subprocess.Process, int, Path, object]:
    workdir = Path(tempfile.mkdtemp(prefix="kaito-bench-"))
    health = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig(workdir / "kubeconfig", url)),
        "KAITO_OPERATOR_METRICS_PORT": "0",
        "KAITO_OPERATOR_RESYNC_SECONDS": "30",
    }
    command = [sys.executable, "-m", "pykaito.operator", "-A", "--liveness-port", str(health)]
    command += ["--log-format", "plain"]
    log = (workdir / "operator.log").open("wb")
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    return process, health, workdir, log


async def main_sets(count: int, replicas: int, limit: float) -> None:
    """N InferenceSets of R replicas each, created at once."""
    async with KubeEmulator() as kube, kmock.Server(kube) as server:
        process, _, workdir, log = await start_operator(str(server.url).rstrip("/"))
        cluster = Cluster(kube)
        player = asyncio.create_task(cluster.run())
        try:
            idle_rss = peak_rss_mib(process.pid)
            names = [f"set-{i:03d}" for i in range(count)]
            start = time.perf_counter()
            await asyncio.gather(*(call(kube, "POST", SET_PATH, set_body(n, replicas)) for n in names))
            deadline = start + limit
            children_done = ready_done = 0.0
            while not ready_done:
                if time.perf_counter() > deadline:
                    raise SystemExit(
                        f"not all sets ready after {limit:.0f}s (children at {children_done:.1f}s)"
                    )
                now = time.perf_counter() - start
                if not children_done and len(objects(kube, WORKSPACES)) >= count * replicas:
                    children_done = now
                sets = objects(kube, "kaito.sh/v1beta1/inferencesets")
                if len(sets) == count and all(
                    (s.get("status") or {}).get("readyReplicas") == replicas for s in sets
                ):
                    ready_done = now
                await asyncio.sleep(0.1)
            rss = peak_rss_mib(process.pid)
            operator_cpu = cpu_seconds(process.pid)
            replicas_ready = max(cluster.ready_at.values(), default=start) - start
        finally:
            player.cancel()
            process.send_signal(signal.SIGTERM)
            await process.wait()
            log.close()  # type: ignore[attr-defined]
        workspaces = len(objects(kube, WORKSPACES))
        services = len(objects(kube, "v1/services"))
    print(f"operator scale: {count} InferenceSets x {replicas} replicas created at once (kmock emulator)")
    print(
        f"  objects: {workspaces} replica Workspaces, {services} Services (expected {count * replicas}, "
        f"{count * (2 * replicas + 1)})"
    )
    print(
        f"  all replica Workspaces exist after {children_done:.1f} s, all Ready after "
        f"{replicas_ready:.1f} s; every set reports them ready after {ready_done:.1f} s"
    )
    print(
        f"  operator peak RSS: {rss:.0f} MiB (idle after start: {idle_rss:.0f} MiB); CPU {operator_cpu:.1f} s"
    )
    print(f"  operator log: {workdir / 'operator.log'}")


async def main(count: int, limit: float) -> None:
    async with KubeEmulator() as kube, kmock.Server(kube) as server:
        workdir = Path(tempfile.mkdtemp(prefix="kaito-bench-"))
        health = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig(workdir / "kubeconfig", str(server.url).rstrip("/"))),
            "KAITO_OPERATOR_METRICS_PORT": "0",
            "KAITO_OPERATOR_RESYNC_SECONDS": "30",
        }
        command = [sys.executable, "-m", "pykaito.operator", "-A", "--liveness-port", str(health)]
        command += ["--log-format", "plain"]
        log = (workdir / "operator.log").open("wb")
        process = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
        cluster = Cluster(kube)
        player = asyncio.create_task(cluster.run())
        try:
            async with httpx.AsyncClient() as http:
                while True:
                    try:
                        if (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            idle_rss = peak_rss_mib(process.pid)

            baseline = ["baseline-0"]
            created = await create_all(kube, baseline)
            await wait_ready(cluster, baseline, limit)
            base_children = cluster.children_at["baseline-0"] - created["baseline-0"]
            base_ready = cluster.ready_at["baseline-0"] - created["baseline-0"]

            names = [f"ws-{i:03d}" for i in range(count)]
            start = time.perf_counter()
            created = await create_all(kube, names)
            await wait_ready(cluster, names, limit)
            elapsed = max(cluster.ready_at[n] for n in names) - start
            to_children = [cluster.children_at[n] - created[n] for n in names]
            to_ready = [cluster.ready_at[n] - created[n] for n in names]
            rss = peak_rss_mib(process.pid)
            operator_cpu = cpu_seconds(process.pid)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            emulator_cpu = usage.ru_utime + usage.ru_stime
        finally:
            player.cancel()
            process.send_signal(signal.SIGTERM)
            await process.wait()
            log.close()
        claims = len(objects(kube, NODECLAIMS))
        sets = len(objects(kube, "apps/v1/statefulsets"))
        services = len(objects(kube, "v1/services"))

    p50c, p95c = statistics.median(to_children), percentile(to_children, 0.95)
    p50r, p95r = statistics.median(to_ready), percentile(to_ready, 0.95)
    print(f"operator scale: {count} Workspaces created at once (kmock emulator, operator as a process)")
    expected = f"{count + 1} / {count + 1} / {2 * (count + 1)}"
    print(f"  objects: {claims} NodeClaims, {sets} StatefulSets, {services} Services (expected {expected})")
    print(f"  all Ready in {elapsed:.1f} s: {count / elapsed:.1f} workspaces/s")
    print(
        f"  create -> children: p50 {p50c * 1000:.0f} ms, p95 {p95c * 1000:.0f} ms "
        f"(single-Workspace baseline {base_children * 1000:.0f} ms: p50 x{p50c / base_children:.1f})"
    )
    print(
        f"  create -> Ready:    p50 {p50r * 1000:.0f} ms, p95 {p95r * 1000:.0f} ms "
        f"(single-Workspace baseline {base_ready * 1000:.0f} ms: p50 x{p50r / base_ready:.1f})"
    )
    print(f"  operator peak RSS: {rss:.0f} MiB (idle after start: {idle_rss:.0f} MiB)")
    print(f"  CPU seconds: operator {operator_cpu:.1f}, emulator and cluster player {emulator_cpu:.1f}")
    print(f"  operator log: {workdir / 'operator.log'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--inferencesets", type=int, default=0, help="run the InferenceSet case with N sets")
    parser.add_argument("--set-replicas", type=int, default=4)
    args = parser.parse_args()
    if args.inferencesets:
        asyncio.run(main_sets(args.inferencesets, args.set_replicas, args.timeout))
    else:
        asyncio.run(main(args.count, args.timeout))
