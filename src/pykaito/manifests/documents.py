"""From a YAML file's documents to the objects its Workspaces become: default, validate, plan, render.

Pure: the caller reads the file (``pykaito.api.loading``) and prints the result. ConfigMaps in the
same documents feed ``inference.config``; Node objects (or ``nodes``) size the Workspaces that name
no instance type (bring-your-own nodes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pykaito.api.defaults import apply_defaults
from pykaito.api.loading import Documents
from pykaito.api.types import ANNOTATION_RUNTIME, CONFIG_KEY, Runtime, Workspace
from pykaito.api.validation import ValidationContext, validate
from pykaito.catalog.loader import Catalog, load_catalog
from pykaito.errors import FieldError, InputError, ValidationError
from pykaito.manifests.images import Images
from pykaito.manifests.nodeclaims import NodeClassRef, render_nodeclaims
from pykaito.manifests.weight_cache import WeightCacheSettings, cache_for, render_download_job, render_pvc
from pykaito.manifests.workload import render
from pykaito.planner.sizing import plan


@dataclass(frozen=True)
class Rendered:
    """The objects to apply, in order, and notes on what could not be taken into account."""

    objects: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()


def node_objects(docs: Documents) -> list[dict[str, Any]]:
    """Node objects among the documents (``kubectl get nodes -o yaml`` writes them as a List)."""
    return [obj for obj in docs.others if obj.get("kind") == "Node"]


def inference_config(
    workspace: Workspace, config_maps: Mapping[str, Mapping[str, str]], source: str
) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """(parsed ``inference_config.yaml``, the ConfigMap's data), or (None, None) when not given."""
    name = workspace.inference.config if workspace.inference else None
    if not name or name not in config_maps:
        return None, None
    data = dict(config_maps[name])
    text = data.get(CONFIG_KEY)
    if text is None:
        raise InputError(
            f"{source}: ConfigMap {name!r} has no key {CONFIG_KEY!r}; put the engine arguments under it"
        )
    try:
        parsed = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: ConfigMap {name!r}: {CONFIG_KEY} is not valid YAML") from exc
    if not isinstance(parsed, dict):
        raise InputError(f"{source}: ConfigMap {name!r}: {CONFIG_KEY} must be a mapping of sections")
    return parsed, data


def _needs_nodes(workspace: Workspace, nodes: Sequence[Mapping[str, Any]]) -> bool:
    resource = workspace.resource
    on_gpu = workspace.annotation(ANNOTATION_RUNTIME) != Runtime.LLAMACPP.value
    on_mig = resource is not None and resource.partition is not None and resource.partition.mode == "mig"
    return on_gpu and not on_mig and not (resource and resource.instanceType) and not nodes


def render_documents(
    docs: Documents,
    *,
    nodes: Sequence[Mapping[str, Any]] = (),
    images: Images | None = None,
    namespace: str | None = None,
    include_nodeclaims: bool = False,
    node_class: NodeClassRef | None = None,
    catalog: Catalog | None = None,
    weight_cache: WeightCacheSettings | None = None,
) -> Rendered:
    """Every object the Workspaces in ``docs`` become: per Workspace, NodeClaims (when asked) then
    Services and StatefulSet. Raises InputError, ValidationError or PlanError naming the Workspace.

    With ``weight_cache``, a Workspace whose weights are downloaded at start is preceded by its
    cache's PVC and download Job (once per cache) and its pods read the cache."""
    catalog = catalog or load_catalog()
    known_nodes = [*nodes, *node_objects(docs)]
    objects: list[dict[str, Any]] = []
    notes: list[str] = []
    caches: set[tuple[str, str]] = set()
    for raw in docs.workspaces:
        workspace = apply_defaults(raw, namespace, catalog)
        subject = f"workspace/{workspace.name or '?'}"
        if _needs_nodes(workspace, known_nodes):
            raise InputError(
                f"{subject}: no resource.instanceType, so it runs on your own nodes: "
                "pass them with --nodes (kubectl get nodes -o yaml > nodes.yaml) to size it"
            )
        config_maps = docs.config_maps(workspace.namespace)
        config, config_data = inference_config(workspace, config_maps, docs.source)
        if workspace.inference and workspace.inference.config and config_data is None:
            notes.append(
                f"{subject}: ConfigMap {workspace.inference.config!r} is not in {docs.source}; "
                "it is mounted, but its engine arguments are not in the rendered command line"
            )
        context = ValidationContext(
            catalog=catalog, config_maps=config_maps if config_data is not None else None
        )
        errors = validate(workspace, context=context)
        if errors:
            raise ValidationError([FieldError(f"{subject} {e.path}", e.message) for e in errors])
        byo = workspace.resource is None or not workspace.resource.instanceType
        workspace_plan = plan(workspace, catalog, known_nodes if byo and known_nodes else None, config=config)
        if include_nodeclaims:
            objects += render_nodeclaims(workspace, workspace_plan, node_class=node_class)
        cache = cache_for(workspace, workspace_plan, weight_cache) if weight_cache is not None else None
        if cache is not None and not cache.per_pod and (cache.namespace, cache.name) not in caches:
            caches.add((cache.namespace, cache.name))
            objects += [
                render_pvc(cache, weight_cache),
                render_download_job(cache, workspace, images, weight_cache),
            ]
            notes.append(
                f"{subject}: its pods read the weights from PersistentVolumeClaim {cache.name}; without the "
                f"operator, wait for Job {cache.job_name} to complete (kubectl wait --for=condition=complete "
                f"job/{cache.job_name}) before the pods can start"
            )
        objects += render(
            workspace, workspace_plan, images=images, config_data=config_data, weight_cache=cache
        )
    return Rendered(objects=tuple(objects), notes=tuple(notes))
