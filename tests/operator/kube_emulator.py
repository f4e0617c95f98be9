"""A kmock-based Kubernetes API emulator realistic enough for kopf, kubernetes and kubernetes_asyncio.

Stock kmock 0.8 serves objects as plain JSON documents. This subclass adds what a real API server does
and what those clients rely on:

- uid, resourceVersion (one cluster-wide counter), creationTimestamp and generation on every object;
- 201 on create, 409 AlreadyExists, 409 Conflict on a stale resourceVersion, 422 on a failed JSON-patch
  ``test`` operation, PUT (replace);
- ``/status`` writes change only status; status in a main-resource write is ignored;
- lists carry kind, apiVersion and the current resourceVersion; equality label selectors;
- watches subscribe before taking their snapshot, honour ``?resourceVersion=`` and ``timeoutSeconds``,
  and accept ``watch=True`` as well as ``watch=true``;
- ``GET /version/`` and core discovery reporting groupVersion ``v1``; errors as Status with a reason;
- pod logs (``/log``) and port-forwarding (``/portforward`` upgraded to a websocket with the
  ``v4.channel.k8s.io`` subprotocol, piped to a local TCP port);
- fault injection: answer a given status for the next N calls matching a method and a path pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import re
import struct
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, dicts, enums, rendering

WORKSPACES = "kaito.sh/v1beta1/workspaces"
NODECLAIMS = "karpenter.sh/v1/nodeclaims"
BUILTIN: dict[str, tuple[str, bool]] = {
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/nodes": ("Node", False),
    "v1/configmaps": ("ConfigMap", True),
    "v1/secrets": ("Secret", True),
    "v1/events": ("Event", True),
    "v1/namespaces": ("Namespace", False),
    "apps/v1/statefulsets": ("StatefulSet", True),
    "events.k8s.io/v1/events": ("Event", True),
}
NO_STATUS = {"v1/configmaps", "v1/secrets", "v1/events", "events.k8s.io/v1/events"}


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={"causes": []})


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The emulator; declare resources with :meth:`declare` (the builtins and Workspaces are declared)."""

    with_nodeclaims: bool = True
    faults: list[Fault] = attrs.field(factory=list)
    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    port_forwards: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _rv: int = 0
    _log: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=lambda: defaultdict(list))
    _index: dict[Any, dict[tuple[str | None, str], Any]] = attrs.field(factory=lambda: defaultdict(dict))
    _streams: dict[tuple[str, str], set[Any]] = attrs.field(factory=lambda: defaultdict(set))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["get /version/"] << self._serve_server_version
        for key, (kind, namespaced) in BUILTIN.items():
            subresources = set() if key in NO_STATUS else {"status"}
            self.declare(key, kind, namespaced=namespaced, subresources=subresources)
        self.declare(WORKSPACES, "Workspace", shortnames={"wk", "wks"})
        if self.with_nodeclaims:
            self.declare(NODECLAIMS, "NodeClaim", namespaced=False)

    def declare(
        self,
        key: str,
        kind: str,
        *,
        namespaced: bool = True,
        subresources: set[str] | None = None,
        shortnames: set[str] | None = None,
    ) -> None:
        self.resources[key] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"list", "watch", "get", "create", "update", "patch", "delete"},
            subresources={"status"} if subresources is None else subresources,
            shortnames=shortnames or set(),
        )

    def fail_next(self, method: str, path: str, status: int, count: int = 1) -> Fault:
        """Answer ``status`` to the next ``count`` calls whose method and path (a regex) match."""
        fault = Fault(method.upper(), re.compile(path), status, count)
        self.faults.append(fault)
        return fault

    # --- discovery -------------------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and payload.get("groupVersion", "").startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        return payload

    # --- request dispatch ------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        for fault in self.faults:
            method = str(request.method.value).upper()
            if fault.remaining > 0 and fault.method == method and fault.path.search(request.url.path):
                fault.remaining -= 1
                reason = {409: "Conflict", 500: "InternalError", 429: "TooManyRequests"}.get(
                    fault.status, "Injected"
                )
                raise _error(fault.status, reason, f"injected fault for {request.url.path}")
        res = request.resource
        if res is None or res.plural is None:
            return await apps.RawHandler._handle(self, request)
        if res not in self.resources:  # declared resources only (a missing CRD answers 404)
            raise _error(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
        sub = request.subresource
        method = str(request.method.value).upper()
        if sub == "portforward":
            return await self._serve_portforward(request)
        if sub == "log":
            text = self.pod_logs.get((request.namespace or "", request.name or ""), "")
            return aiohttp.web.Response(text=text, content_type="text/plain")
        if method == "GET" and request.params.get("watch", "").lower() in {"true", "1"}:
            return await self._watch(request)
        if method == "GET" and request.name is None:
            return aiohttp.web.json_response(await self._list(request))
        if method == "GET":
            return aiohttp.web.json_response(self._current(request).raw)
        if method == "POST" and request.name is None:
            return aiohttp.web.json_response(await self._create(request), status=201)
        if method in {"PATCH", "PUT"} and request.name is not None:
            return aiohttp.web.json_response(await self._write(request, replace=method == "PUT"))
        if method == "DELETE" and request.name is not None:
            return aiohttp.web.json_response(await self._delete(request))
        raise _error(405, "MethodNotAllowed", f"{method} is not supported on {request.url.path}")

    # --- storage ---------------------------------------------------------------------------------

    def _key(self, request: rendering.Request, name: str | None = None) -> Any:
        assert request.resource is not None
        return (request.resource, request.namespace, name or request.name)

    def _current(self, request: rendering.Request) -> Any:
        key = self._key(request)
        if key not in self._objects or self._objects[key].deleted:
            raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')  # type: ignore[union-attr]
        return self._objects[key]

    def _has_status(self, request: rendering.Request) -> bool:
        return "status" in self.resources[request.resource].subresources  # type: ignore[index]

    async def _emit(self, request: rendering.Request, kind: str, raw: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(raw)}
        self._log[request.resource].append((self._rv, event))
        await self._buses[request.resource].put(event)  # type: ignore[index]

    def _bump(self, raw: dict[str, Any]) -> None:
        self._rv += 1
        raw.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    async def _create(self, request: rendering.Request) -> dict[str, Any]:
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            raise _error(400, "BadRequest", "the request body is not a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name: Required value")
        if request.namespace:
            meta["namespace"] = request.namespace
        info = self.resources[request.resource]  # type: ignore[index]
        body.setdefault("kind", info.kind)
        res = request.resource
        assert res is not None
        body.setdefault("apiVersion", f"{res.group}/{res.version}" if res.group else res.version)
        if self._has_status(request):
            body.pop("status", None)
        async with self._lock:
            key = self._key(request, meta["name"])
            if key in self._objects and not self._objects[key].deleted:
                raise _error(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            meta.pop("deletionTimestamp", None)
            self._bump(body)
            if key in self._objects:
                self._objects[key].create(body)
            else:
                self._objects[key] = body
            self._index[res][(key[1], key[2])] = self._objects[key]
            await self._emit(request, "ADDED", body)
        return body

    async def _write(self, request: rendering.Request, *, replace: bool) -> dict[str, Any]:
        async with self._lock:
            obj = self._current(request)
            old = copy.deepcopy(obj.raw)
            data = request.data
            try:
                if replace:
                    new = copy.deepcopy(data)
                elif isinstance(data, list):
                    new = jsonpatch.apply_patch(copy.deepcopy(old), data)
                elif isinstance(data, dict):
                    new = dict(dicts.merge_patch_dict(copy.deepcopy(old), data))
                else:
                    raise _error(400, "BadRequest", "the patch is neither a JSON patch nor a merge patch")
            except jsonpatch.JsonPatchTestFailed as exc:
                raise _error(422, "Invalid", f"the JSON patch test failed: {exc}") from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
            old_meta, new_meta = old["metadata"], new.setdefault("metadata", {})
            wanted_rv = new_meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old_meta["resourceVersion"] and not isinstance(data, list):
                raise _error(
                    409, "Conflict", "the object has been modified; apply your changes to the latest"
                )
            for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "generation"):
                if field in old_meta:
                    new_meta[field] = old_meta[field]
            new.setdefault("kind", old.get("kind"))
            new.setdefault("apiVersion", old.get("apiVersion"))
            if request.subresource == "status":
                new = {**old, "status": new.get("status")}
                new["metadata"] = old_meta
            elif self._has_status(request):
                new["status"] = old.get("status")
            new = {k: v for k, v in new.items() if v is not None}
            spec_old = {k: v for k, v in old.items() if k not in {"metadata", "status"}}
            spec_new = {k: v for k, v in new.items() if k not in {"metadata", "status"}}
            if spec_old != spec_new:
                new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            if new == old:
                return old
            self._bump(new)
            obj.history.append(new)
            await self._emit(request, "MODIFIED", new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                obj.delete()
                self._bump(new)
                await self._emit(request, "DELETED", new)
        return new

    async def _delete(self, request: rendering.Request) -> dict[str, Any]:
        async with self._lock:
            obj = self._current(request)
            raw = copy.deepcopy(obj.raw)
            meta = raw["metadata"]
            if meta.get("deletionTimestamp"):
                return raw
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = _now()
                self._bump(raw)
                obj.history.append(raw)
                await self._emit(request, "MODIFIED", raw)
                return raw
            obj.delete()
            self._bump(raw)
            await self._emit(request, "DELETED", raw)
        if request.resource == "v1/pods":  # a deleted pod's port-forward streams end, as the kubelet's do
            for ws in list(self._streams.pop((request.namespace or "", request.name or ""), ())):
                await ws.close()
        return raw

    def _snapshot(self, request: rendering.Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector", "")
        items = []
        for (namespace, _), obj in self._index[request.resource].items():
            if obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = obj.raw
            if selector and not _selector_matches(selector, raw.get("metadata", {}).get("labels") or {}):
                continue
            items.append(copy.deepcopy(raw))
        return items

    async def _list(self, request: rendering.Request) -> dict[str, Any]:
        async with self._lock:
            items = self._snapshot(request)
            rv = str(self._rv)
        info = self.resources[request.resource]  # type: ignore[index]
        res = request.resource
        assert res is not None
        return {
            "kind": f"{info.kind}List",
            "apiVersion": f"{res.group}/{res.version}" if res.group else res.version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _watch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        bus = self._buses[request.resource]  # type: ignore[index]
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        selector = request.params.get("labelSelector", "")
        async with self._lock:
            mark = await bus.mark()
            if since and since != "0":
                backlog = [e for rv, e in self._log[request.resource] if rv > int(since)]
            else:
                backlog = [{"type": "ADDED", "object": raw} for raw in self._snapshot(request)]
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)

        def wanted(event: dict[str, Any]) -> bool:
            meta = event.get("object", {}).get("metadata", {})
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            if request.name is not None and meta.get("name") != request.name:
                return False
            return not selector or _selector_matches(selector, meta.get("labels") or {})

        async def pump() -> None:
            for event in backlog:
                if wanted(event):
                    await response.write(json.dumps(event).encode() + b"\n")
            async for event in bus.stream(since=mark):
                if wanted(event):
                    await response.write(json.dumps(event).encode() + b"\n")

        try:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(pump(), timeout)
            await response.write_eof()
        finally:
            await bus.unmark(mark)
        return response

    # --- port-forward ----------------------------------------------------------------------------

    async def _serve_portforward(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.namespace or "", request.name or "")
        self._current(request)  # 404 for a pod that does not exist
        target = self.port_forwards.get(key)
        if target is None:
            raise _error(404, "NotFound", f'pod "{request.name}" has no forwarded port')
        port = int(request.params.get("ports", "0").split(",")[0])
        ws = aiohttp.web.WebSocketResponse(protocols=["v4.channel.k8s.io"])
        assert request._raw_request is not None
        await ws.prepare(request._raw_request)
        reader, writer = await asyncio.open_connection("127.0.0.1", target)
        await ws.send_bytes(b"\x00" + struct.pack("<H", port))  # data channel: the port, once
        await ws.send_bytes(b"\x01" + struct.pack("<H", port))  # error channel: the port, once

        async def upstream() -> None:
            while chunk := await reader.read(65536):
                await ws.send_bytes(b"\x00" + chunk)
            await ws.close()

        task = asyncio.create_task(upstream())
        self._streams[key].add(ws)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00" and len(msg.data) > 1:
                    writer.write(msg.data[1:])
                    await writer.drain()
        finally:
            self._streams[key].discard(ws)
            task.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return ws


__all__ = ["NODECLAIMS", "WORKSPACES", "Fault", "KubeEmulator", "enums"]
