"""The emulator answers as a real API server does where kopf and the clients depend on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.web

from tests.netutil import free_port
from tests.operator import chart, cluster
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.rbac import Attributes, Authorizer, User

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


# --- the rules a real API server enforces -------------------------------------------------------

NAMESPACES = "/api/v1/namespaces"
PODS = "/api/v1/namespaces/default/pods"
SECRETS = "/api/v1/namespaces/default/secrets"


async def as_operator(kube: KubeEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await cluster.send(kube, method, path, body, token=chart.OPERATOR_TOKEN)


async def test_rbac_refuses_what_the_chart_does_not_grant(kube: KubeEmulator) -> None:
    operator = chart.operator_user(kube.manifests)
    status, answer = await as_operator(kube, "GET", SECRETS)  # the chart grants get, not list
    assert status == 403 and answer["reason"] == "Forbidden"
    assert answer["message"] == (
        f'secrets is forbidden: User "{operator.name}" cannot list resource "secrets" '
        'in API group "" in the namespace "default"'
    )
    assert (await as_operator(kube, "GET", f"{SECRETS}/hf-token"))[0] == 404  # get: allowed, not there
    status, answer = await as_operator(kube, "DELETE", "/apis/apps/v1/namespaces/default/statefulsets/w")
    assert status == 403 and 'cannot delete resource "statefulsets" in API group "apps"' in answer["message"]
    assert (await as_operator(kube, "PATCH", f"{WS}/w/status", {"status": {}}))[0] == 404  # granted
    assert (await as_operator(kube, "GET", "/apis/kaito.sh/v1beta1"))[0] == 200  # discovery is open
    assert (await cluster.send(kube, "GET", SECRETS, token="stolen"))[0] == 401
    assert (await send(kube, "GET", SECRETS))[0] == 200  # the test itself is an admin
    denied = {(a.verb, a.resource) for a in kube.denied(operator)}
    assert denied == {("list", "secrets"), ("delete", "statefulsets")}


def test_roles_apply_in_their_namespace_only() -> None:
    role = {
        "kind": "Role",
        "metadata": {"name": "reader", "namespace": "team-a"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}],
    }
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "reader", "namespace": "team-a"},
        "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot"}],
    }
    rules = Authorizer.from_objects([role, binding])
    bot, other = User.service_account("team-a", "bot"), User.service_account("team-b", "bot")
    assert rules.allows(bot, Attributes("get", "", "pods", "", "team-a", "p"))
    assert rules.allows(bot, Attributes("get", "", "pods", "log", "team-a", "p"))
    assert not rules.allows(bot, Attributes("get", "", "pods", "exec", "team-a", "p"))
    assert not rules.allows(bot, Attributes("get", "", "pods", "", "team-b", "p"))
    assert not rules.allows(bot, Attributes("list", "", "pods", "", "team-a"))
    assert not rules.allows(other, Attributes("get", "", "pods", "", "team-a", "p"))


@contextlib.asynccontextmanager
async def fake_webhook(kube: KubeEmulator) -> AsyncIterator[list[dict[str, Any]]]:
    """A webhook at the chart's Service that records each review and denies objects annotated
    ``test/deny``, registered as the chart's ValidatingWebhookConfiguration registers it."""
    reviews: list[dict[str, Any]] = []

    async def review(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = (await request.json())["request"]
        reviews.append(body)
        annotations = ((body["object"] or {}).get("metadata") or {}).get("annotations") or {}
        answer: dict[str, Any] = {"uid": body["uid"], "allowed": "test/deny" not in annotations}
        if not answer["allowed"]:
            answer["status"] = {"code": 422, "message": f"no: {annotations['test/deny']}"}
        return aiohttp.web.json_response({"apiVersion": "admission.k8s.io/v1", "response": answer})

    app = aiohttp.web.Application()
    app.router.add_post("/validate-workspace", review)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    kube.admission.register(kube.manifests)
    kube.admission.routes[chart.webhook_service(kube.manifests)] = f"http://127.0.0.1:{port}"
    try:
        yield reviews
    finally:
        kube.admission.unregister()
        await runner.cleanup()


async def test_admission_sees_every_workspace_write_but_status(kube: KubeEmulator) -> None:
    async with fake_webhook(kube) as reviews:
        assert (await send(kube, "POST", WS, {"metadata": {"name": "w"}}))[0] == 201
        finalizer = {"metadata": {"finalizers": ["example.com/hold"]}}
        assert (await send(kube, "PATCH", f"{WS}/w", finalizer))[0] == 200
        assert (await send(kube, "PATCH", f"{WS}/w/status", {"status": {"state": "Ready"}}))[0] == 200
        status, answer = await send(
            kube, "PATCH", f"{WS}/w", {"metadata": {"annotations": {"test/deny": "x"}}}
        )
        assert status == 422
        assert (
            answer["message"] == 'admission webhook "validate.workspaces.kaito.sh" denied the request: no: x'
        )
        assert (await send(kube, "POST", CMS, {"metadata": {"name": "not-a-workspace"}}))[0] == 201
        assert (await send(kube, "DELETE", f"{WS}/w"))[0] == 200  # the chart registers no DELETE
        unhold = [{"op": "remove", "path": "/metadata/finalizers"}]
        assert (await send(kube, "PATCH", f"{WS}/w", unhold, "application/json-patch+json"))[0] == 200
        assert [(r["operation"], r["name"]) for r in reviews] == [
            ("CREATE", "w"),
            ("UPDATE", "w"),
            ("UPDATE", "w"),
            ("UPDATE", "w"),
        ]
        assert reviews[1]["oldObject"]["metadata"].get("finalizers") is None
        assert reviews[1]["userInfo"]["username"] == "kubernetes-admin"
        assert reviews[3]["object"]["metadata"]["deletionTimestamp"]  # the finalizer removal
        assert "test/deny" not in (await send(kube, "GET", CMS))[1]["items"][0]["metadata"].get(
            "annotations", {}
        )
        kube.admission.routes.clear()  # the webhook's pod is gone: failurePolicy Fail refuses writes
        status, answer = await send(kube, "POST", WS, {"metadata": {"name": "v"}})
        assert status == 500 and 'failed calling webhook "validate.workspaces.kaito.sh"' in answer["message"]


def owned_by(*owners: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
        for o in owners
    ]


async def test_dependents_are_collected_when_all_their_owners_are_gone(kube: KubeEmulator) -> None:
    _, owner = await send(kube, "POST", CMS, {"metadata": {"name": "owner"}})
    _, other = await send(kube, "POST", CMS, {"metadata": {"name": "other"}})
    _, child = await send(
        kube, "POST", CMS, {"metadata": {"name": "child", "ownerReferences": owned_by(owner)}}
    )
    await send(kube, "POST", CMS, {"metadata": {"name": "grandchild", "ownerReferences": owned_by(child)}})
    await send(kube, "POST", CMS, {"metadata": {"name": "shared", "ownerReferences": owned_by(owner, other)}})
    assert (await send(kube, "DELETE", f"{CMS}/owner"))[0] == 200
    names = {i["metadata"]["name"] for i in (await send(kube, "GET", CMS))[1]["items"]}
    assert names == {"other", "shared"}  # one owner of "shared" is still there
    await send(kube, "DELETE", f"{CMS}/other")
    assert (await send(kube, "GET", CMS))[1]["items"] == []


async def test_label_selectors_on_lists_and_watches(kube: KubeEmulator) -> None:
    for name, labels in [("a", {"app": "a", "tier": "web"}), ("b", {"app": "b"}), ("c", {"app": "c"})]:
        await send(kube, "POST", PODS, {"metadata": {"name": name, "labels": labels}})

    async def names(selector: str) -> list[str]:
        async with kube.get(PODS, params={"labelSelector": selector}) as response:
            return sorted(i["metadata"]["name"] for i in (await response.json())["items"])

    assert await names("app in (a, b)") == ["a", "b"]
    assert await names("app notin (a),!tier") == ["b", "c"]
    assert await names("tier") == ["a"]
    assert await names("app!=c,app") == ["a", "b"]
    async with kube.get(PODS, params={"labelSelector": "app in (a"}) as response:
        assert response.status == 400
    events = []
    params = {"watch": "true", "labelSelector": "app in (b)", "timeoutSeconds": "1"}
    async with kube.get(PODS, params=params) as response:
        async with asyncio.timeout(5):
            async for line in response.content:
                events.append(json.loads(line)["object"]["metadata"]["name"])
    assert events == ["b"]


async def test_namespace_teardown_deletes_its_content_then_itself(kube: KubeEmulator) -> None:
    team = f"{NAMESPACES}/team-a"
    await send(kube, "POST", NAMESPACES, {"metadata": {"name": "team-a"}})
    await send(kube, "POST", f"{team}/configmaps", {"metadata": {"name": "config"}})
    held = {"metadata": {"name": "w", "finalizers": ["example.com/hold"]}}
    await send(kube, "POST", "/apis/kaito.sh/v1beta1/namespaces/team-a/workspaces", held)
    status, namespace = await send(kube, "DELETE", team)
    assert status == 200 and namespace["status"]["phase"] == "Terminating"
    status, answer = await send(kube, "POST", f"{team}/configmaps", {"metadata": {"name": "late"}})
    assert status == 403 and "because it is being terminated" in answer["message"]

    async def content() -> tuple[int, Any, int]:
        configs = (await send(kube, "GET", f"{team}/configmaps"))[1]["items"]
        ws = await send(kube, "GET", "/apis/kaito.sh/v1beta1/namespaces/team-a/workspaces/w")
        return len(configs), ws[1], (await send(kube, "GET", team))[0]

    configs, ws, _ = await cluster.eventually(
        lambda: _first_pass_done(content)  # the ConfigMap goes, the held Workspace waits
    )
    assert configs == 0 and ws["metadata"]["deletionTimestamp"]
    assert (await send(kube, "GET", team))[0] == 200  # still Terminating
    unhold = [{"op": "remove", "path": "/metadata/finalizers"}]
    path = "/apis/kaito.sh/v1beta1/namespaces/team-a/workspaces/w"
    assert (await send(kube, "PATCH", path, unhold, "application/json-patch+json"))[0] == 200
    await cluster.eventually(lambda: _status_is(kube, team, 404))


async def _first_pass_done(content: Any) -> Any:
    configs, ws, _ = found = await content()
    return found if configs == 0 and (ws.get("metadata") or {}).get("deletionTimestamp") else None


async def _status_is(kube: KubeEmulator, path: str, wanted: int) -> bool:
    return (await send(kube, "GET", path))[0] == wanted
