"""Kubernetes access for the CLI and apps: Workspaces, their events, pods and logs.

The kubeconfig and context are found as kubectl finds them (``--kubeconfig``, ``KUBECONFIG``,
``~/.kube/config``, else the in-cluster service account). Objects come back as plain dicts in the
wire format. Every failure of the ``kubernetes`` client or of the network surfaces as a
:class:`ClusterError` that says what failed and what to check, raised from the original.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException

from pykaito.api.types import GROUP, LABEL_WORKSPACE, PLURAL, VERSION
from pykaito.errors import ClusterError

k8s_config: Any = _k8s_config  # the kubernetes client's config loaders are untyped
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        return str(exc.reason or "")
    return str(body.get("message") or exc.reason or "")


class NotFoundError(ClusterError):
    """The object asked for does not exist."""


@contextlib.contextmanager
def api_errors(what: str, server: str = "") -> Iterator[None]:
    """Map the kubernetes client's and urllib3's exceptions to ClusterError for ``what`` was tried."""
    try:
        yield
    except ApiException as exc:
        status = int(exc.status or 0)
        message = _status_message(exc)
        if status == 404:
            raise NotFoundError(f"{what}: not found ({message})") from exc
        hint = {
            401: "check the credentials in your kubeconfig",
            403: "your user lacks the permission (RBAC)",
            409: "it was changed meanwhile; try again",
        }.get(status, "")
        text = f"{what}: HTTP {status} {exc.reason}: {message}" + (f" — {hint}" if hint else "")
        raise ClusterError(text) from exc
    except urllib3.exceptions.HTTPError as exc:
        where = f" at {server}" if server else ""
        raise ClusterError(f"{what}: cannot reach the Kubernetes API server{where} ({exc})") from exc
    except k8s_config.ConfigException as exc:
        raise ClusterError(f"{what}: {exc}") from exc


class KubeClient:
    """Workspaces and what belongs to them, in one namespace by default."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> None:
        configuration = k8s.Configuration()
        default_namespace = "default"
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        home_config = Path.home() / ".kube" / "config"
        with api_errors("loading the kubeconfig"):
            if path or home_config.exists() or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                config_file = path or str(home_config)
                if kubeconfig and not Path(kubeconfig).is_file():
                    what = "is a directory" if Path(kubeconfig).is_dir() else "does not exist"
                    raise ClusterError(
                        f"--kubeconfig {kubeconfig}: the file {what}; give the path of a kubeconfig file"
                        " (~/.kube/config by default)"
                    )
                if not Path(config_file).exists():
                    raise ClusterError(
                        f"no kubeconfig at {config_file}: pass --kubeconfig, set KUBECONFIG, "
                        "or run inside a cluster"
                    )
                k8s_config.load_kube_config(
                    config_file=config_file, context=context, client_configuration=configuration
                )
                contexts, active = k8s_config.list_kube_config_contexts(config_file=config_file)
                chosen = next((c for c in contexts if c["name"] == context), active) if context else active
                default_namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
            else:
                k8s_config.load_incluster_config(client_configuration=configuration)
                if IN_CLUSTER_NAMESPACE.exists():
                    default_namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        self.configuration = configuration
        self.api_client: Any = k8s.ApiClient(configuration)
        self.namespace = namespace or default_namespace
        self.core: Any = k8s.CoreV1Api(self.api_client)
        self.custom: Any = k8s.CustomObjectsApi(self.api_client)

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def close(self) -> None:
        self.api_client.close()

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return api_errors(what, self.server)

    def _plain(self, model: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.api_client.sanitize_for_serialization(model)
        return data

    # --- Workspaces -----------------------------------------------------------------------------

    def apply_workspace(self, workspace: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Workspace, or update the one with its name; returns (object, created)."""
        meta = workspace.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", self.namespace)
        name = meta.get("name", "")
        body = {k: v for k, v in workspace.items() if k != "status"}
        try:
            with self._errors(f"creating workspace {namespace}/{name}"):
                created = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            return dict(created), True
        except ClusterError as exc:
            if not isinstance(exc.__cause__, ApiException) or exc.__cause__.status != 409:
                raise
        patch = {k: v for k, v in body.items() if k not in {"apiVersion", "kind"}}
        patch["metadata"] = {k: v for k, v in meta.items() if k in {"labels", "annotations"}}
        with self._errors(f"updating workspace {namespace}/{name}"):
            updated = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            )
        return dict(updated), False

    def get_workspace(self, name: str) -> dict[str, Any]:
        try:
            with self._errors(f"reading workspace {self.namespace}/{name}"):
                found = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except NotFoundError as exc:
            raise NotFoundError(
                f"workspace {name!r} not found in namespace {self.namespace!r} (`kaito get` lists them)"
            ) from exc
        return dict(found)

    def list_workspaces(self) -> list[dict[str, Any]]:
        with self._errors(f"listing workspaces in {self.namespace}"):
            found = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return [dict(item) for item in found.get("items", [])]

    def delete_workspace(self, name: str) -> None:
        try:
            with self._errors(f"deleting workspace {self.namespace}/{name}"):
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except NotFoundError as exc:
            raise NotFoundError(f"workspace {name!r} not found in namespace {self.namespace!r}") from exc

    # --- what belongs to a Workspace ------------------------------------------------------------

    def events_for(self, name: str, kind: str = "Workspace") -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind={kind}"
        with self._errors(f"listing events of {name}"):
            found = self.core.list_namespaced_event(self.namespace, field_selector=selector)
        events = [self._plain(e) for e in found.items]
        events = [e for e in events if (e.get("involvedObject") or {}).get("name") == name]
        return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def pods_for(self, name: str) -> list[dict[str, Any]]:
        with self._errors(f"listing pods of {name}"):
            found = self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_WORKSPACE}={name}")
        pods = [self._plain(p) for p in found.items]
        return [
            p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKSPACE) == name
        ]

    def service(self, name: str) -> dict[str, Any]:
        with self._errors(f"reading service {self.namespace}/{name}"):
            return self._plain(self.core.read_namespaced_service(name, self.namespace))

    def pod_logs(self, pod: str, *, tail: int | None = None) -> str:
        with self._errors(f"reading logs of pod {pod}"):
            text = self.core.read_namespaced_pod_log(pod, self.namespace, tail_lines=tail)
        return str(text or "")

    def follow_pod_logs(self, pod: str) -> Iterator[str]:
        """Log lines as the pod writes them, until it stops or the caller stops reading."""
        with self._errors(f"following logs of pod {pod}"):
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, follow=True, _preload_content=False
            )
            try:
                for line in response.stream():
                    yield line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
            finally:
                response.release_conn()
