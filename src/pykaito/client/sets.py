"""InferenceSets on the cluster for the CLI: get, list, apply, delete and scale (the /scale subresource)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from pykaito.api.inferenceset import IS_PLURAL, IS_VERSION, LABEL_CREATED_BY
from pykaito.api.types import GROUP, LABEL_WORKSPACE
from pykaito.client.kube import KubeClient, NotFoundError
from pykaito.errors import ClusterError


class SetClient:
    """InferenceSets in the namespace of a :class:`KubeClient`."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.namespace = kube.namespace

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with self.kube._errors(what):
            return getattr(self.kube.custom, method)(
                GROUP, IS_VERSION, self.namespace, IS_PLURAL, *args, **kwargs
            )

    def get(self, name: str) -> dict[str, Any]:
        try:
            return dict(
                self._call(
                    f"reading inferenceset {self.namespace}/{name}", "get_namespaced_custom_object", name
                )
            )
        except NotFoundError as exc:
            raise NotFoundError(
                f"inferenceset {name!r} not found in namespace {self.namespace!r} (`kaito get is` lists them)"
            ) from exc

    def list_sets(self) -> list[dict[str, Any]]:
        found = self._call(f"listing inferencesets in {self.namespace}", "list_namespaced_custom_object")
        return [dict(item) for item in found.get("items", [])]

    def apply(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        name = meta.get("name", "")
        clean = {k: v for k, v in body.items() if k != "status"}
        try:
            created = self._call(
                f"creating inferenceset {self.namespace}/{name}", "create_namespaced_custom_object", clean
            )
            return dict(created), True
        except ClusterError as exc:
            if not isinstance(exc.__cause__, ApiException) or exc.__cause__.status != 409:
                raise
        patch = {k: v for k, v in clean.items() if k not in {"apiVersion", "kind"}}
        patch["metadata"] = {k: v for k, v in meta.items() if k in {"labels", "annotations"}}
        updated = self._call(
            f"updating inferenceset {self.namespace}/{name}", "patch_namespaced_custom_object", name, patch
        )
        return dict(updated), False

    def delete(self, name: str) -> None:
        try:
            self._call(
                f"deleting inferenceset {self.namespace}/{name}", "delete_namespaced_custom_object", name
            )
        except NotFoundError as exc:
            raise NotFoundError(f"inferenceset {name!r} not found in namespace {self.namespace!r}") from exc

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        """Set spec.replicas through the /scale subresource, as kubectl scale and KEDA do."""
        self.get(name)
        body = {"spec": {"replicas": replicas}}
        found = self._call(
            f"scaling inferenceset {self.namespace}/{name}",
            "patch_namespaced_custom_object_scale",
            name,
            body,
        )
        return dict(found)

    def replicas(self, name: str) -> list[dict[str, Any]]:
        """The set's replica Workspaces, by name."""
        with self.kube._errors(f"listing the replicas of {name}"):
            found = self.kube.custom.list_namespaced_custom_object(
                GROUP, "v1beta1", self.namespace, "workspaces", label_selector=f"{LABEL_CREATED_BY}={name}"
            )
        items = [dict(i) for i in found.get("items", [])]
        items = [
            i for i in items if ((i.get("metadata") or {}).get("labels") or {}).get(LABEL_CREATED_BY) == name
        ]
        return sorted(items, key=lambda i: str((i.get("metadata") or {}).get("name")))


__all__ = ["LABEL_WORKSPACE", "SetClient"]
