"""Validating admission webhooks as kube-apiserver calls them, for the emulator.

A :class:`Webhook` comes from a rendered ValidatingWebhookConfiguration (the Helm chart's): its rules
decide which operations on which resources it sees, ``failurePolicy`` what happens when it cannot be
reached, ``clientConfig.service`` where it is. Services are resolved through :attr:`Admission.routes`
(namespace, name, port) -> a base URL on 127.0.0.1, since there is no cluster network. A review is
an ``admission.k8s.io/v1`` AdmissionReview posted over HTTP; a refusal becomes the client's error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Operation:
    """One write as admission sees it."""

    operation: str  # CREATE, UPDATE, DELETE
    group: str
    version: str
    resource: str
    subresource: str
    kind: str
    namespace: str | None
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    user: Mapping[str, Any]


class Refused(Exception):
    """A write refused by admission: answered to the client with this status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _matches(values: Iterable[str], value: str) -> bool:
    return any(v in {"*", value} for v in values)


@dataclass(frozen=True)
class Webhook:
    name: str
    rules: tuple[Mapping[str, Any], ...]
    service: Mapping[str, Any] | None
    url: str | None
    failure_policy: str
    timeout: float

    @classmethod
    def from_configuration(cls, config: Mapping[str, Any]) -> list[Webhook]:
        hooks = []
        for raw in config.get("webhooks") or ():
            client = raw.get("clientConfig") or {}
            hooks.append(
                cls(
                    name=raw["name"],
                    rules=tuple(raw.get("rules") or ()),
                    service=client.get("service"),
                    url=client.get("url"),
                    failure_policy=raw.get("failurePolicy") or "Fail",
                    timeout=float(raw.get("timeoutSeconds") or 10),
                )
            )
        return hooks

    def sees(self, op: Operation) -> bool:
        """Whether a rule of this webhook matches (status and other subresources need their own rule)."""
        full = f"{op.resource}/{op.subresource}" if op.subresource else op.resource
        for rule in self.rules:
            scope = rule.get("scope") or "*"
            if scope != "*" and (scope == "Namespaced") != (op.namespace is not None):
                continue
            if (
                _matches(rule.get("operations") or (), op.operation)
                and _matches(rule.get("apiGroups") or (), op.group)
                and _matches(rule.get("apiVersions") or (), op.version)
                and _matches(rule.get("resources") or (), full)
            ):
                return True
        return False


@dataclass
class Admission:
    """The registered validating webhooks and how to reach their Services."""

    webhooks: list[Webhook] = field(default_factory=list)
    routes: dict[tuple[str, str, int], str] = field(default_factory=dict)
    reviews: list[Operation] = field(default_factory=list)  # every review sent, in order

    def register(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            if obj.get("kind") == "ValidatingWebhookConfiguration":
                self.webhooks += Webhook.from_configuration(obj)

    def unregister(self) -> None:
        self.webhooks.clear()
        self.routes.clear()

    def _endpoint(self, hook: Webhook) -> str:
        if hook.url:
            return hook.url
        service = hook.service or {}
        key = (str(service.get("namespace")), str(service.get("name")), int(service.get("port") or 443))
        if key not in self.routes:
            raise ConnectionError(f'no endpoints available for service "{key[1]}" in {key[0]}')
        return self.routes[key] + str(service.get("path") or "/")

    async def review(self, op: Operation) -> None:
        """Ask every webhook that sees ``op``; raise :class:`Refused` when one denies it."""
        for hook in self.webhooks:
            if not hook.sees(op):
                continue
            self.reviews.append(op)
            uid = str(uuid.uuid4())
            body = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": {"group": op.group, "version": op.version, "kind": op.kind},
                    "resource": {"group": op.group, "version": op.version, "resource": op.resource},
                    "subResource": op.subresource or None,
                    "requestKind": {"group": op.group, "version": op.version, "kind": op.kind},
                    "requestResource": {"group": op.group, "version": op.version, "resource": op.resource},
                    "name": op.name,
                    "namespace": op.namespace,
                    "operation": op.operation,
                    "userInfo": dict(op.user),
                    "object": op.obj,
                    "oldObject": op.old,
                    "dryRun": False,
                    "options": None,
                },
            }
            try:
                timeout = aiohttp.ClientTimeout(total=hook.timeout)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.post(self._endpoint(hook), json=body) as response,
                ):
                    answer = await response.json(content_type=None)
                    if response.status != 200:
                        raise ConnectionError(f"HTTP {response.status}: {answer}")
            except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
                if hook.failure_policy == "Ignore":
                    continue
                raise Refused(
                    500,
                    "InternalError",
                    f'Internal error occurred: failed calling webhook "{hook.name}": {exc}',
                ) from exc
            result = (answer or {}).get("response") or {}
            if result.get("uid") != uid:
                raise Refused(500, "InternalError", f'webhook "{hook.name}" answered another review')
            if not result.get("allowed"):
                status = result.get("status") or {}
                message = status.get("message") or "denied"
                code = int(status.get("code") or 403)
                raise Refused(
                    code,
                    str(status.get("reason") or ("Forbidden" if code == 403 else "")),
                    f'admission webhook "{hook.name}" denied the request: {message}',
                )
