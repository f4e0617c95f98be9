"""A kmock-based Kubernetes API emulator realistic enough for kopf, kubernetes and kubernetes_asyncio.

Stock kmock 0.8 serves objects as plain JSON documents. This subclass adds what a real API server does
and what those clients rely on:

- uid, resourceVersion (one cluster-wide counter), creationTimestamp and generation on every object;
- 201 on create, 409 AlreadyExists, 409 Conflict on a stale resourceVersion, 422 on a failed JSON-patch
  ``test`` operation, PUT (replace);
- ``/status`` writes change only status; status in a main-resource write is ignored;
- lists carry kind, apiVersion and the current resourceVersion; label selectors (equality and set
  based) on lists and watches;
- watches subscribe before taking their snapshot, honour ``?resourceVersion=`` and ``timeoutSeconds``,
  and accept ``watch=True`` as well as ``watch=true``;
- ``GET /version/`` and core discovery reporting groupVersion ``v1``; errors as Status with a reason;
- pod logs (``/log``) and port-forwarding (``/portforward`` upgraded to a websocket with the
  ``v4.channel.k8s.io`` subprotocol, piped to a local TCP port);
- fault injection: answer a given status for the next N calls matching a method and a path pattern.

And the rules a real API server enforces, when they are configured (the tests configure them from the
Helm chart; :mod:`tests.operator.rbac`, :mod:`tests.operator.admission`):

- authentication by bearer token (401 for an unknown one) and RBAC authorization (403 Forbidden);
  every decision is kept in :attr:`KubeEmulator.audit`;
- validating admission webhooks on create, update (metadata-only and finalizer patches included) and
  delete, as their configurations register them; status writes are not sent to them;
- owner references: ``blockOwnerDeletion`` needs ``update`` on the owner's ``finalizers`` subresource,
  and dependents are garbage-collected (background propagation) once all their owners are gone;
- namespace deletion: the namespace turns Terminating, refuses new content, its objects are deleted
  (Secrets and ConfigMaps first) and it goes once the last one (finalizers honoured) is gone.

Every request goes through :meth:`KubeEmulator._handle` (faults, authentication, authorization), then
:meth:`KubeEmulator.serve`: subclasses hook in by overriding either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import datetime
import json
import re
import struct
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, dicts, enums, parsing, rendering

from tests.operator.admission import Admission, Operation, Refused
from tests.operator.rbac import Attributes, Authorizer, User
from tests.operator.scale_subresource import INFERENCESETS, serve_scale
from tests.operator.selectors import selector_matches

WORKSPACES = "kaito.sh/v1beta1/workspaces"
NODECLAIMS = "karpenter.sh/v1/nodeclaims"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
BUILTIN: dict[str, tuple[str, bool]] = {
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/nodes": ("Node", False),
    "v1/configmaps": ("ConfigMap", True),
    "v1/secrets": ("Secret", True),
    "v1/events": ("Event", True),
    "v1/namespaces": ("Namespace", False),
    "apps/v1/statefulsets": ("StatefulSet", True),
    "batch/v1/jobs": ("Job", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "events.k8s.io/v1/events": ("Event", True),
    CRDS: ("CustomResourceDefinition", False),
}
NO_STATUS = {"v1/configmaps", "v1/secrets", "v1/events", "events.k8s.io/v1/events"}
# What a namespace's teardown deletes first (the worst case for finalizers that still read them).
TEARDOWN_FIRST = ("v1/secrets", "v1/configmaps")
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 fails on the Namespace collection (``/api/v1/namespaces``): read it as a resource."""
    if path.strip("/") == "api/v1/namespaces":
        return parsing.ParsedPath(group="", version="v1", plural="namespaces")
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path

_requester: contextvars.ContextVar[User | None] = contextvars.ContextVar("requester", default=None)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int


@dataclass(frozen=True)
class Access:
    """One authorization decision: who asked to do what, and whether RBAC allowed it."""

    user: str
    verb: str
    group: str
    resource: str  # with the subresource: "workspaces/status"
    namespace: str | None
    name: str | None
    allowed: bool


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)(?:/(status|finalize))?/?$")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={"causes": []})


def _api_version(res: Any) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The emulator; declare resources with :meth:`declare` (the builtins and Workspaces are declared).

    ``tokens`` maps bearer tokens to identities (empty: no authentication, everyone may do anything);
    ``authorizer`` is RBAC (None: every authenticated user may do anything); ``admission`` holds the
    registered validating webhooks; ``manifests`` the installed objects those rules came from.
    """

    with_nodeclaims: bool = True
    faults: list[Fault] = attrs.field(factory=list)
    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    port_forwards: dict[tuple[str, str], int] = attrs.field(factory=dict)
    tokens: dict[str, User] = attrs.field(factory=dict)
    authorizer: Authorizer | None = None
    admission: Admission = attrs.field(factory=Admission)
    manifests: list[dict[str, Any]] = attrs.field(factory=list)  # what is installed (the rendered chart)
    audit: list[Access] = attrs.field(factory=list)
    _rv: int = 0
    _log: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=lambda: defaultdict(list))
    _index: dict[Any, dict[tuple[str | None, str], Any]] = attrs.field(factory=lambda: defaultdict(dict))
    _streams: dict[tuple[str, str], set[Any]] = attrs.field(factory=lambda: defaultdict(set))
    _controllers: set[asyncio.Task[None]] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["get /version/"] << self._serve_server_version
        for key, (kind, namespaced) in BUILTIN.items():
            subresources = set() if key in NO_STATUS else {"status"}
            self.declare(key, kind, namespaced=namespaced, subresources=subresources)
        self.declare(WORKSPACES, "Workspace", shortnames={"wk", "wks"})
        self.declare(
            INFERENCESETS, "InferenceSet", subresources={"status", "scale"}, shortnames={"is", "isets"}
        )
        if self.with_nodeclaims:
            self.declare(NODECLAIMS, "NodeClaim", namespaced=False)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for task in list(self._controllers):
            task.cancel()
        for task in list(self._controllers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().__aexit__(exc_type, exc_value, traceback)

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

    def invalid(self, message: str) -> kmock.KubernetesError:
        return _error(422, "Invalid", message)

    def fail_next(self, method: str, path: str, status: int, count: int = 1) -> Fault:
        """Answer ``status`` to the next ``count`` calls whose method and path (a regex) match."""
        fault = Fault(method.upper(), re.compile(path), status, count)
        self.faults.append(fault)
        return fault

    def denied(self, user: User | None = None) -> list[Access]:
        """The requests RBAC refused (of ``user`` only, when given)."""
        return [a for a in self.audit if not a.allowed and (user is None or a.user == user.name)]

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
        request = self._namespace_as_object(request)
        user = self._authenticate(request)
        _requester.set(user)
        self._authorize(request, user)
        return await self.serve(request)

    @staticmethod
    def _namespace_as_object(request: rendering.Request) -> rendering.Request:
        """``/api/v1/namespaces/NAME[/status]`` addresses the Namespace object NAME (kmock reads NAME
        as the namespace of a request without a resource)."""
        found = _NAMESPACE_PATH.match(request.url.path)
        if found is None:
            return request
        return attrs.evolve(
            request,
            resource=kmock.resource("v1/namespaces"),
            namespace=None,
            name=found.group(1),
            subresource=found.group(2),
        )

    def _authenticate(self, request: rendering.Request) -> User | None:
        """The requester (None when authentication is off); 401 for a missing or unknown token."""
        if not self.tokens:
            return None
        raw = request._raw_request
        header = raw.headers.get("Authorization", "") if raw is not None else ""
        scheme, _, token = header.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise _error(401, "Unauthorized", "Unauthorized")
        return user

    def attributes(self, request: rendering.Request) -> Attributes:
        """The request in RBAC's terms: verb, group, resource, subresource, namespace, name."""
        method = str(request.method.value).upper()
        res = request.resource
        if res is None or res.plural is None:
            return Attributes(verb=method.lower() if method != "GET" else "get", path=request.url.path)
        if method == "GET":
            watching = request.params.get("watch", "").lower() in {"true", "1"}
            verb = "watch" if watching else ("get" if request.name is not None else "list")
        elif method == "DELETE":
            verb = "delete" if request.name is not None else "deletecollection"
        else:
            verb = VERBS.get(method, method.lower())
        subresource = request.subresource or ""
        if subresource in {"portforward", "log"} and method == "GET":
            verb = "create" if subresource == "portforward" else "get"
        return Attributes(
            verb=verb,
            group=res.group or "",
            resource=res.plural,
            subresource=subresource,
            namespace=request.namespace,
            name=request.name,
        )

    def _authorize(self, request: rendering.Request, user: User | None) -> None:
        if user is None or self.authorizer is None:
            return
        attrs = self.attributes(request)
        allowed = self.authorizer.allows(user, attrs)
        if attrs.is_resource:
            full = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
            self.audit.append(
                Access(user.name, attrs.verb, attrs.group, full, attrs.namespace, attrs.name, allowed)
            )
        if not allowed:
            raise _error(403, "Forbidden", attrs.describe(user))

    async def serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """Serve an authenticated, authorized request: the one place where requests are routed."""
        res = request.resource
        if res is None or res.plural is None:
            return await apps.RawHandler._handle(self, request)
        if res not in self.resources:  # declared resources only (a missing CRD answers 404)
            raise _error(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
        sub = request.subresource
        method = str(request.method.value).upper()
        if sub == "portforward":
            return await self._serve_portforward(request)
        if sub == "scale":
            return await serve_scale(self, request, method)
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

    # --- admission -------------------------------------------------------------------------------

    async def _admit(
        self,
        request: rendering.Request,
        operation: str,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
    ) -> None:
        """Run the validating webhooks that see this write; their refusal is the client's error."""
        if not self.admission.webhooks or request.subresource == "status":
            return
        res = request.resource
        assert res is not None
        user = _requester.get()
        name = str(((obj or old or {}).get("metadata") or {}).get("name") or request.name or "")
        op = Operation(
            operation=operation,
            group=res.group or "",
            version=str(res.version),
            resource=str(res.plural),
            subresource=request.subresource or "",
            kind=self.resources[res].kind,
            namespace=request.namespace,
            name=name,
            obj=copy.deepcopy(obj),
            old=copy.deepcopy(old),
            user={"username": user.name, "groups": list(user.groups)} if user else {"username": "admin"},
        )
        try:
            await self.admission.review(op)
        except Refused as refusal:
            raise _error(refusal.status, refusal.reason, refusal.message) from refusal

    def _check_owner_references(self, request: rendering.Request, body: dict[str, Any]) -> None:
        """``blockOwnerDeletion`` on an owner reference needs ``update`` on the owner's finalizers."""
        user = _requester.get()
        if user is None or self.authorizer is None:
            return
        for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("blockOwnerDeletion"):
                continue
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            owner = next(
                (
                    r
                    for r, info in self.resources.items()
                    if info.kind == ref.get("kind") and (r.group or "") == group
                ),
                None,
            )
            if owner is None:
                continue
            namespace = request.namespace if self.resources[owner].namespaced else None
            attrs = Attributes("update", group, str(owner.plural), "finalizers", namespace, ref.get("name"))
            allowed = self.authorizer.allows(user, attrs)
            resource = f"{owner.plural}/finalizers"
            self.audit.append(Access(user.name, "update", group, resource, namespace, attrs.name, allowed))
            if not allowed:
                raise _error(
                    422,
                    "Invalid",
                    f"metadata.ownerReferences: cannot set blockOwnerDeletion if an ownerReference refers "
                    f"to a resource you can't set finalizers on: {attrs.describe(user)}",
                )

    # --- storage ---------------------------------------------------------------------------------

    def _key(self, request: rendering.Request, name: str | None = None) -> Any:
        assert request.resource is not None
        return (request.resource, request.namespace, name or request.name)

    def _current(self, request: rendering.Request) -> Any:
        key = self._key(request)
        if key not in self._objects or self._objects[key].deleted:
            raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')  # type: ignore[union-attr]
        return self._objects[key]

    def _stored(self, key: Any) -> Any:
        """The object stored under ``key`` (resource, namespace, name); None when absent or deleted."""
        try:
            obj = self._objects[key]
        except KeyError:
            return None
        return None if obj.deleted else obj

    def _has_status(self, request: rendering.Request) -> bool:
        return "status" in self.resources[request.resource].subresources  # type: ignore[index]

    async def _emit(self, resource: Any, kind: str, raw: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(raw)}
        self._log[resource].append((self._rv, event))
        await self._buses[resource].put(event)

    def _bump(self, raw: dict[str, Any]) -> None:
        self._rv += 1
        raw.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    def _terminating(self, namespace: str | None) -> bool:
        if namespace is None:
            return False
        obj = self._stored((kmock.resource("v1/namespaces"), None, namespace))
        return bool(obj is not None and obj.raw["metadata"].get("deletionTimestamp"))

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
        if self._terminating(request.namespace):
            raise _error(
                403,
                "Forbidden",
                f"unable to create new content in namespace {request.namespace} "
                "because it is being terminated",
            )
        info = self.resources[request.resource]  # type: ignore[index]
        body.setdefault("kind", info.kind)
        res = request.resource
        assert res is not None
        body.setdefault("apiVersion", _api_version(res))
        if self._has_status(request):
            body.pop("status", None)
        self._check_owner_references(request, body)
        await self._admit(request, "CREATE", body, None)
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
            await self._emit(res, "ADDED", body)
        return body

    def _apply(self, request: rendering.Request, old: dict[str, Any], *, replace: bool) -> dict[str, Any]:
        """The object a write would store (the server-owned fields kept from ``old``)."""
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
            raise _error(409, "Conflict", "the object has been modified; apply your changes to the latest")
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
        return new

    async def _write(self, request: rendering.Request, *, replace: bool) -> dict[str, Any]:
        # As kube-apiserver's optimistic update: compute, admit (no lock held: webhooks call back
        # into this server), then store only if nobody wrote meanwhile, else start over.
        for _ in range(10):
            async with self._lock:
                old = copy.deepcopy(self._current(request).raw)
                new = self._apply(request, old, replace=replace)
            if request.subresource != "status":
                self._check_owner_references(request, new)
            await self._admit(request, "UPDATE", new, old)
            gone: dict[str, Any] | None = None
            async with self._lock:
                obj = self._current(request)
                if obj.raw["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                    continue
                if new == old:
                    return old
                self._bump(new)
                obj.history.append(new)
                await self._emit(request.resource, "MODIFIED", new)
                if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                    obj.delete()
                    self._bump(new)
                    await self._emit(request.resource, "DELETED", new)
                    gone = new
            if gone is not None:
                await self._collect_garbage(gone)
            return new
        raise _error(409, "Conflict", "the object keeps being modified; try again")

    async def _delete(self, request: rendering.Request) -> dict[str, Any]:
        current = copy.deepcopy(self._current(request).raw)
        await self._admit(request, "DELETE", None, current)
        raw = await self.remove(request.resource, request.namespace, str(request.name))
        if raw is None:
            raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')  # type: ignore[union-attr]
        return raw

    async def remove(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Delete an object as the API server does (finalizers honoured, dependents collected,
        a namespace torn down); None when it does not exist."""
        resource = kmock.resource(resource) if isinstance(resource, str) else resource
        key = (resource, namespace, name)
        async with self._lock:
            obj = self._stored(key)
            if obj is None:
                return None
            raw = copy.deepcopy(obj.raw)
            meta = raw["metadata"]
            if meta.get("deletionTimestamp"):
                return raw
            if meta.get("finalizers") or resource == kmock.resource("v1/namespaces"):
                meta["deletionTimestamp"] = _now()
                if resource == kmock.resource("v1/namespaces"):
                    raw.setdefault("status", {})["phase"] = "Terminating"
                self._bump(raw)
                obj.history.append(raw)
                await self._emit(resource, "MODIFIED", raw)
                if resource == kmock.resource("v1/namespaces"):
                    self._start(self._tear_down_namespace(name))
                return raw
            obj.delete()
            self._bump(raw)
            await self._emit(resource, "DELETED", raw)
        if resource == kmock.resource("v1/pods"):  # its port-forward streams end, as the kubelet's do
            for ws in list(self._streams.pop((namespace or "", name), ())):
                await ws.close()
        await self._collect_garbage(raw)
        return raw

    # --- controllers: garbage collection and namespace teardown ----------------------------------

    def _start(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._controllers.add(task)
        task.add_done_callback(self._controllers.discard)

    def _live_uids(self) -> set[str]:
        live = (obj.raw for obj in self._objects.values() if not obj.deleted)
        return {str((raw.get("metadata") or {}).get("uid")) for raw in live}

    async def _collect_garbage(self, gone: dict[str, Any]) -> None:
        """Delete the dependents of a removed owner whose owners are all gone (background propagation)."""
        uid = (gone.get("metadata") or {}).get("uid")
        if not uid:
            return
        live = self._live_uids()
        doomed = []
        for (res, namespace, name), obj in list(self._objects.items()):
            if obj.deleted:
                continue
            refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
            owners = {str(r.get("uid")) for r in refs}
            if uid in owners and not owners & live:
                doomed.append((res, namespace, name))
        for res, namespace, name in doomed:
            await self.remove(res, namespace, name)

    def _in_namespace(self, namespace: str) -> list[tuple[Any, str | None, str]]:
        return [key for key, obj in self._objects.items() if key[1] == namespace and not obj.deleted]

    async def _tear_down_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything in it, then the namespace itself."""
        first = [kmock.resource(r) for r in TEARDOWN_FIRST]
        while True:
            keys = sorted(self._in_namespace(namespace), key=lambda k: k[0] not in first)
            if not keys:
                break
            for res, ns, name in keys:
                await self.remove(res, ns, name)
            await asyncio.sleep(0.05)  # objects with finalizers go when their controllers release them
        key = (kmock.resource("v1/namespaces"), None, namespace)
        async with self._lock:
            obj = self._stored(key)
            if obj is None:
                return
            raw = copy.deepcopy(obj.raw)
            obj.delete()
            self._bump(raw)
            await self._emit(key[0], "DELETED", raw)

    # --- reading ---------------------------------------------------------------------------------

    def _selector(self, request: rendering.Request) -> Callable[[dict[str, Any]], bool]:
        selector = request.params.get("labelSelector", "")
        try:
            selector_matches(selector, {})
        except ValueError as exc:
            raise _error(400, "BadRequest", f"unable to parse labelSelector {selector!r}: {exc}") from exc
        return lambda raw: selector_matches(selector, (raw.get("metadata") or {}).get("labels") or {})

    def _snapshot(self, request: rendering.Request) -> list[dict[str, Any]]:
        matches = self._selector(request)
        items = []
        for (namespace, _), obj in self._index[request.resource].items():
            if obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if not matches(obj.raw):
                continue
            items.append(copy.deepcopy(obj.raw))
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
            "apiVersion": _api_version(res),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _watch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        bus = self._buses[request.resource]  # type: ignore[index]
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        matches = self._selector(request)
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
            obj = event.get("object", {})
            meta = obj.get("metadata", {})
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            if request.name is not None and meta.get("name") != request.name:
                return False
            return matches(obj)

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


__all__ = ["CRDS", "NODECLAIMS", "WORKSPACES", "Access", "Fault", "KubeEmulator", "enums"]
