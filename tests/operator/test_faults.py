"""The operator against a faulty API server: dropped watches and 410 Gone, 429 with Retry-After, 403,
timeouts, faults on DELETE, and a node lost after the Workspace was Ready."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.cluster import (
    apply,
    call,
    condition,
    eventually,
    example,
    launch_nodeclaims,
    live,
    objects,
    run_pods,
)
from tests.operator.conftest import emulated_cluster, running_operator
from tests.operator.faults import FaultyKube
from tests.operator.kube_emulator import NODECLAIMS, WORKSPACES

SEED = "workspace-phi-4-mini-h100"
STATEFULSETS = "apps/v1/statefulsets"


@pytest.fixture
async def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FaultyKube]:
    async with emulated_cluster(tmp_path, monkeypatch, "replicas=1", kind=FaultyKube) as emulator:
        assert isinstance(emulator, FaultyKube)
        yield emulator


def workspace(kube: FaultyKube, name: str = SEED) -> dict[str, Any] | None:
    return live(kube, WORKSPACES, "default", name)


def is_true(kube: FaultyKube, kind: str, name: str = SEED) -> bool:
    return condition(workspace(kube, name), kind).get("status") == "True"


def events(kube: FaultyKube, reason: str, name: str = SEED) -> list[str]:
    return [
        str(e.get("message"))
        for e in objects(kube, "v1/events")
        if e["involvedObject"]["name"] == name and e.get("reason") == reason
    ]


def renamed(name: str) -> dict[str, Any]:
    ws = example(f"{SEED}.yaml")
    ws["metadata"]["name"] = name
    return ws


async def bring_up(kube: FaultyKube, name: str = SEED) -> None:
    await apply(kube, renamed(name))
    await eventually(lambda: [c for c in objects(kube, NODECLAIMS) if _owner(c) == name], timeout=30)
    await launch_nodeclaims(kube)
    await eventually(lambda: live(kube, STATEFULSETS, "default", name), timeout=30)
    await run_pods(kube, name)
    await eventually(lambda: is_true(kube, "WorkspaceSucceeded", name), timeout=30)


def _owner(obj: dict[str, Any]) -> str:
    return str((obj["metadata"].get("labels") or {}).get("kaito.sh/workspace"))


async def test_dropped_watches_and_410_gone_are_survived(faulty: FaultyKube) -> None:
    async with running_operator(faulty):
        await bring_up(faulty)
        for _ in range(3):  # the API server restarts: every stream is cut, resuming ones are too old
            await eventually(lambda: faulty.watch_count() >= 4, timeout=30)
            faulty.gone_watches = 10
            assert faulty.drop_watches() >= 4
            await eventually(lambda: faulty.gone_watches == 0 and faulty.watch_count() >= 4, timeout=30)
        gone = [s for s in faulty.seen if s.watch and "resourceVersion=" in s.path]
        assert faulty.gone_watches == 0, gone

        # after all that, both a new Workspace and a child deleted by hand are still noticed
        await call(faulty, "DELETE", f"/api/v1/namespaces/default/services/{SEED}")
        await eventually(lambda: live(faulty, "v1/services", "default", SEED), timeout=30)
        await bring_up(faulty, "second")
    assert len(objects(faulty, NODECLAIMS)) == 2
    assert len(objects(faulty, STATEFULSETS)) == 2


async def test_429_with_retry_after_is_obeyed(faulty: FaultyKube) -> None:
    too_many = faulty.answer_next("POST", r"/statefulsets$", 429, count=2, headers={"Retry-After": "1"})
    async with running_operator(faulty):
        await bring_up(faulty)
    assert len(too_many.hits) == 2
    posts = [s.at for s in faulty.requests("POST", r"/statefulsets$")]
    assert len(posts) == 3  # two refused, the third created it: no duplicate
    gaps = [b - a for a, b in itertools.pairwise(posts)]
    assert min(gaps) >= 0.95, gaps  # waited as long as the server asked, not the 0.2 s backoff
    assert len(objects(faulty, STATEFULSETS)) == 1


async def test_403_is_reported_and_recovered_from(faulty: FaultyKube) -> None:
    forbidden = faulty.answer_next("POST", r"/namespaces/default/services$", 403, count=6)
    async with running_operator(faulty):
        await apply(faulty, example(f"{SEED}.yaml"))
        await eventually(lambda: objects(faulty, NODECLAIMS), timeout=30)
        await launch_nodeclaims(faulty)
        messages = await eventually(lambda: events(faulty, "ClusterError"), timeout=30)
        assert "HTTP 403" in messages[0]
        assert "RBAC" in messages[0]  # says what to check
        await eventually(lambda: forbidden.remaining == 0, timeout=60)
        await eventually(lambda: live(faulty, "v1/services", "default", SEED), timeout=30)
        await eventually(lambda: live(faulty, STATEFULSETS, "default", SEED), timeout=30)
        await run_pods(faulty, SEED)
        await eventually(lambda: is_true(faulty, "WorkspaceSucceeded"), timeout=30)
    assert len(objects(faulty, "v1/services")) == 2


async def test_a_hung_api_server_times_out_and_is_retried(
    faulty: FaultyKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITO_OPERATOR_API_TIMEOUT_SECONDS", "1.0")
    # held far longer than the test waits: only a client deadline gets the reconcile past them
    hung = faulty.delay_next("GET", r"/statefulsets/" + SEED + "$", seconds=120.0, count=3)
    try:
        async with running_operator(faulty):
            await bring_up(faulty)
    finally:
        hung.released.set()
    assert hung.remaining == 0
    assert len(objects(faulty, STATEFULSETS)) == 1


async def test_faults_on_delete_never_leave_a_workspace_stuck(faulty: FaultyKube) -> None:
    async with running_operator(faulty):
        await bring_up(faulty)
        claim = objects(faulty, NODECLAIMS)[0]["metadata"]["name"]
        failing = faulty.answer_next("DELETE", rf"/nodeclaims/{claim}$", 500, count=5)
        forbidden = faulty.answer_next("DELETE", rf"/nodeclaims/{claim}$", 403, count=2)
        await call(faulty, "DELETE", f"/apis/kaito.sh/v1beta1/namespaces/default/workspaces/{SEED}")
        await eventually(lambda: workspace(faulty) is None, timeout=60)
    assert (failing.remaining, forbidden.remaining) == (0, 0)
    assert objects(faulty, NODECLAIMS) == []


async def test_a_node_lost_after_ready_is_reported_and_replaced(faulty: FaultyKube) -> None:
    async with running_operator(faulty):
        await bring_up(faulty)
        claim = objects(faulty, NODECLAIMS)[0]
        old_uid, node = claim["metadata"]["uid"], claim["status"]["nodeName"]

        # the node dies: its pod goes with it, then Karpenter removes the NodeClaim
        await call(faulty, "DELETE", f"/api/v1/nodes/{node}")
        await call(faulty, "DELETE", f"/api/v1/namespaces/default/pods/{SEED}-0")
        ws = await eventually(lambda: not is_true(faulty, "ResourceReady") and workspace(faulty), timeout=30)
        assert condition(ws, "ResourceReady")["reason"] in {"NodeNotReady", "NodeClaimNotReady"}
        assert condition(ws, "InferenceReady")["status"] == "False"
        assert condition(ws, "InferenceReady")["reason"]
        assert ws["status"]["state"] != "Ready"
        await call(faulty, "DELETE", f"/apis/karpenter.sh/v1/nodeclaims/{claim['metadata']['name']}")

        # the operator asks for a replacement, which comes up and serves again
        await eventually(
            lambda: [c for c in objects(faulty, NODECLAIMS) if c["metadata"]["uid"] != old_uid], timeout=30
        )
        assert len(objects(faulty, NODECLAIMS)) == 1
        await launch_nodeclaims(faulty)
        await run_pods(faulty, SEED)
        await eventually(lambda: is_true(faulty, "WorkspaceSucceeded"), timeout=30)
    assert len(objects(faulty, STATEFULSETS)) == 1
