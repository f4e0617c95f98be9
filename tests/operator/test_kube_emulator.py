"""The emulator answers as a real API server does where kopf and the clients depend on it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.operator.kube_emulator import KubeEmulator

CMS = "/api/v1/namespaces/default/configmaps"
WS = "/apis/kaito.sh/v1beta1/namespaces/default/workspaces"


async def send(
    kube: KubeEmulator, method: str, path: str, body: Any = None, ctype: str = ""
) -> tuple[int, Any]:
    headers = {"Content-Type": ctype or "application/merge-patch+json"}
    async with kube.request(method, path, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_writes_carry_server_metadata_and_preconditions(kube: KubeEmulator) -> None:
    status, created = await send(kube, "POST", CMS, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    meta = created["metadata"]
    assert status == 201 and meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert (await send(kube, "POST", CMS, {"metadata": {"name": "a"}}))[1]["reason"] == "AlreadyExists"
    stale = {"metadata": {"resourceVersion": "0"}, "data": {"k": "2"}}
    assert (await send(kube, "PATCH", f"{CMS}/a", stale))[0] == 409
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}]
    assert (await send(kube, "PATCH", f"{CMS}/a", test_op, "application/json-patch+json"))[0] == 422
    status, replaced = await send(
        kube, "PUT", f"{CMS}/a", {"metadata": {"name": "a"}, "data": {"k": "3"}}, "application/json"
    )
    assert status == 200 and replaced["data"] == {"k": "3"} and replaced["metadata"]["uid"] == meta["uid"]
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert replaced["metadata"]["generation"] == 2


async def test_status_subresource_and_lists(kube: KubeEmulator) -> None:
    body = {"metadata": {"name": "w"}, "resource": {"instanceType": "x"}, "status": {"state": "Made-up"}}
    _, created = await send(kube, "POST", WS, body)
    assert "status" not in created
    _, patched = await send(
        kube, "PATCH", f"{WS}/w/status", {"status": {"state": "Ready"}, "resource": {"instanceType": "y"}}
    )
    assert patched["status"] == {"state": "Ready"} and patched["resource"] == {"instanceType": "x"}
    _, patched = await send(
        kube, "PATCH", f"{WS}/w", {"status": {"state": "Failed"}, "resource": {"instanceType": "z"}}
    )
    assert patched["status"] == {"state": "Ready"} and patched["resource"] == {"instanceType": "z"}
    _, listed = await send(kube, "GET", WS)
    assert listed["kind"] == "WorkspaceList" and listed["apiVersion"] == "kaito.sh/v1beta1"
    assert listed["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    _, core = await send(kube, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    assert (await send(kube, "GET", "/version/"))[0] == 200


async def test_watch_resumes_from_a_resource_version(kube: KubeEmulator) -> None:
    await send(kube, "POST", CMS, {"metadata": {"name": "before"}})
    _, listed = await send(kube, "GET", CMS)
    since = listed["metadata"]["resourceVersion"]
    await send(kube, "POST", CMS, {"metadata": {"name": "after"}})  # between the list and the watch
    events = []
    async with kube.get(
        CMS, params={"watch": "True", "resourceVersion": since, "timeoutSeconds": "1"}
    ) as response:
        async with asyncio.timeout(5):
            async for line in response.content:
                events.append(json.loads(line))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]


async def test_injected_faults_answer_then_clear(kube: KubeEmulator) -> None:
    fault = kube.fail_next("GET", r"/configmaps$", 500, count=2)
    assert (await send(kube, "GET", CMS))[1]["reason"] == "InternalError"
    assert (await send(kube, "GET", CMS))[0] == 500
    assert (await send(kube, "GET", CMS))[0] == 200 and fault.remaining == 0
