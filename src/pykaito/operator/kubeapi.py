"""The operator's Kubernetes access: raw JSON over kubernetes_asyncio, errors mapped to ClusterError.

Objects stay plain dicts (they only pass through). Every request has a deadline (a hung API server
never blocks a reconcile). Transient failures (HTTP 429/5xx, a dropped connection, a timeout) are
retried a few times with a short backoff, or after the server's ``Retry-After`` when it sends one;
everything else surfaces as :class:`ApiError`, which carries the HTTP status so callers can tell
"not found" from "refused".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from pykaito.api.types import GROUP, PLURAL, VERSION
from pykaito.errors import ClusterError

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TRANSIENT = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is left to the handler's own retry


@dataclass(frozen=True)
class Resource:
    """A Kubernetes resource: where its objects live in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


WORKSPACES = Resource(GROUP, VERSION, PLURAL)
NODECLAIMS = Resource("karpenter.sh", "v1", "nodeclaims", namespaced=False)
NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
STATEFULSETS = Resource("apps", "v1", "statefulsets")

_BY_KIND = {
    ("v1", "Service"): SERVICES,
    ("v1", "ConfigMap"): CONFIGMAPS,
    ("v1", "Secret"): SECRETS,
    ("v1", "Pod"): PODS,
    ("apps/v1", "StatefulSet"): STATEFULSETS,
    ("karpenter.sh/v1", "NodeClaim"): NODECLAIMS,
}


def resource_of(obj: dict[str, Any]) -> Resource:
    """The resource of a rendered object, from its apiVersion and kind."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise ClusterError(f"the operator does not manage {key[1]} ({key[0]}) objects") from None


class ApiError(ClusterError):
    """The API server answered with an error status (``status`` 0 when it could not be reached)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _error_from(exc: ApiException, method: str, path: str) -> ApiError:
    reason, message = str(exc.reason or ""), ""
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or ""
    except (ValueError, TypeError, AttributeError):
        pass
    text = f"{method} {path}: HTTP {exc.status} {reason}" + (f": {message}" if message else "")
    if exc.status == 403:
        text += " (the operator's service account lacks this permission: check the chart's RBAC)"
    return ApiError(text, status=int(exc.status or 0), reason=reason)


def retry_after(exc: ApiException) -> float | None:
    """The server's ``Retry-After`` in seconds (delta-seconds form), None when absent or unreadable."""
    headers: Any = exc.headers or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


async def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """The client configuration: in-cluster when running in a pod, else the kubeconfig as kubectl finds it."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration
    path = (
        kubeconfig
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    try:
        await k8s_config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError) as exc:
        raise ClusterError(f"cannot load the kubeconfig {path}: {exc}") from exc
    return configuration


class KubeApi:
    """Async JSON access to the API server for the operator."""

    def __init__(
        self, api_client: Any, *, retries: int = 3, backoff: float = 0.2, timeout: float = 30.0
    ) -> None:
        self._api = api_client
        self._retries = retries
        self._backoff = backoff
        self._timeout = timeout

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, *, request_timeout: float = 30.0
    ) -> KubeApi:
        configuration = await load_configuration(kubeconfig, context)
        return cls(k8s_client.ApiClient(configuration), timeout=request_timeout)

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        """One request, retried when transient; the JSON answer (or the text, with ``text``)."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        queries: list[tuple[str, str]] = list((query or {}).items())
        await self._api.update_params_for_auth(headers, queries, ["BearerToken"])
        url = self._api.configuration.host + path
        for attempt in range(self._retries + 1):
            delay = self._backoff * 2**attempt
            try:
                response = await self._api.rest_client.request(
                    method,
                    url,
                    query_params=queries or None,
                    headers=headers,
                    body=body,
                    _request_timeout=self._timeout,
                )
                data = response.data
                if text:
                    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
                return json.loads(data) if data else None
            except ApiException as exc:
                error = _error_from(exc, method, path)
                wait = retry_after(exc)
                if exc.status not in TRANSIENT or attempt == self._retries:
                    raise error from exc
                if wait is not None and wait > MAX_RETRY_AFTER:
                    raise error from exc
                delay = max(delay, wait or 0.0)
            except TimeoutError as exc:
                if attempt == self._retries:
                    raise ApiError(
                        f"{method} {path}: the API server did not answer within {self._timeout:g}s"
                    ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                if attempt == self._retries:
                    raise ApiError(f"{method} {path}: cannot reach the API server: {exc}") from exc
            logger.debug("retrying %s %s in %.1fs (attempt %d)", method, path, delay, attempt + 1)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self.request("GET", res.path(namespace, name)))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, res: Resource, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        data = await self.request("GET", res.path(namespace), query=query)
        items = [dict(item) for item in (data or {}).get("items") or []]
        if labels:  # also filter here: not every server honours label selectors
            items = [
                i
                for i in items
                if all(((i.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
        return items

    async def pod_log(
        self, namespace: str, name: str, *, container: str | None = None, tail_lines: int = 10
    ) -> str:
        """The last lines of a pod's log."""
        query = {"tailLines": str(tail_lines), **({"container": container} if container else {})}
        return str(await self.request("GET", PODS.path(namespace, name, "log"), query=query, text=True))

    async def create(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return dict(await self.request("POST", res.path(namespace), body=obj))

    async def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        path = res.path(namespace, name, subresource)
        return dict(await self.request("PATCH", path, body=patch, content_type=content_type))

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete an object; False when it was already gone."""
        try:
            await self.request("DELETE", res.path(namespace, name), body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True
