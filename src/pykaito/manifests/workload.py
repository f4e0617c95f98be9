"""The inference workload of a Workspace: its StatefulSet and its two Services."""

from __future__ import annotations

import copy
from typing import Any

from pykaito.api.types import ANNOTATION_ENABLE_LB, Workspace
from pykaito.errors import PlanError
from pykaito.manifests import pod, weight_cache
from pykaito.manifests.images import Images
from pykaito.manifests.meta import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_REVISION,
    LABEL_POD_NAME,
    headless_name,
    object_meta,
    plan_fingerprint,
    pod_labels,
    selector_labels,
    sha256_hex,
)
from pykaito.manifests.template import template_statefulset
from pykaito.manifests.weight_cache import WeightCache
from pykaito.planner.template import TEMPLATE_RUNTIME
from pykaito.planner.types import Plan

SERVICE_PORT = 80
RAY_DASHBOARD_PORT = 8265
RUNTIMES = ("vllm", "transformers", "llamacpp", TEMPLATE_RUNTIME)


def check_plan(workspace: Workspace, plan: Plan) -> None:
    """Refuse plans that no pod layout can run, naming what to change."""
    if not workspace.name:
        raise PlanError("metadata.name: the Workspace has no name; give it one before rendering")
    if plan.runtime not in RUNTIMES:
        raise PlanError(f"plan for {workspace.name!r}: unknown runtime {plan.runtime!r}")
    if plan.node_count < 1:
        raise PlanError(f"plan for {workspace.name!r}: node_count is {plan.node_count}, expected at least 1")
    if plan.multi_node and plan.runtime != "vllm":
        raise PlanError(
            f"workspace {workspace.name!r}: the {plan.runtime} runtime runs on one node, the plan needs "
            f"{plan.node_count}: use the vllm runtime or an instance type whose GPUs hold the model"
        )


def container(
    workspace: Workspace,
    plan: Plan,
    images: Images,
    mounts: list[dict[str, Any]],
    cache: WeightCache | None = None,
) -> dict[str, Any]:
    """The inference container: ``pykaito-runtime <runtime> <args>`` serving on port 5000."""
    args = pod.runtime_args(workspace, plan, cache)
    spec: dict[str, Any] = {
        "name": pod.container_name(workspace),
        "image": pod.preset_image(workspace) or images.for_runtime(plan.runtime),
        "imagePullPolicy": images.pull_policy,
    }
    if plan.multi_node:
        spec["command"] = ["/bin/sh", "-c", pod.MULTI_NODE_SCRIPT, pod.RUNTIME_COMMAND]
    else:
        spec["command"] = [pod.RUNTIME_COMMAND]
    spec["args"] = args
    ports: list[dict[str, Any]] = [{"name": pod.PORT_NAME, "containerPort": pod.PORT, "protocol": "TCP"}]
    if plan.multi_node:
        ports.append({"name": "ray-gcs", "containerPort": pod.RAY_PORT, "protocol": "TCP"})
    spec["ports"] = ports
    spec["env"] = pod.env(workspace, plan, cache)
    spec["resources"] = pod.resources(plan)
    spec.update(pod.probes(plan))
    spec["volumeMounts"] = mounts
    spec["securityContext"] = pod.container_security_context(plan)
    return spec


def pod_template(
    workspace: Workspace,
    plan: Plan,
    images: Images,
    config_data: dict[str, Any] | None,
    cache: WeightCache | None = None,
) -> dict[str, Any]:
    volumes, mounts, init_containers = pod.volumes_and_mounts(workspace, plan, images, cache)
    metadata: dict[str, Any] = {"labels": pod_labels(workspace)}
    if config_data is not None:
        metadata["annotations"] = {ANNOTATION_CONFIG_HASH: sha256_hex(config_data)}
    spec: dict[str, Any] = {}
    if init_containers:
        spec["initContainers"] = init_containers
    spec["containers"] = [container(workspace, plan, images, mounts, cache)]
    spec["volumes"] = volumes
    affinity = pod.node_affinity(workspace)
    if affinity is not None:
        spec["affinity"] = affinity
    if not pod.is_cpu(plan):
        spec["tolerations"] = [dict(t) for t in pod.GPU_TOLERATIONS]
    security = pod.pod_security_context(plan)
    if cache is not None and cache.per_pod:  # the non-root downloader writes the pod's own volume
        security = {**(security or {}), "fsGroup": weight_cache.NON_ROOT_UID}
    if security is not None:
        spec["securityContext"] = security
    pull_secrets = pod.image_pull_secrets(workspace)
    if pull_secrets:
        spec["imagePullSecrets"] = pull_secrets
    spec["automountServiceAccountToken"] = False
    spec["enableServiceLinks"] = False
    return {"metadata": metadata, "spec": spec}


def revision(template: dict[str, Any], plan: Plan) -> str:
    """sha256 over the canonical pod template and plan: equal inputs, equal revision."""
    return sha256_hex({"template": template, "plan": plan_fingerprint(plan)})


def statefulset(
    workspace: Workspace,
    plan: Plan,
    images: Images,
    config_data: dict[str, Any] | None = None,
    cache: WeightCache | None = None,
) -> dict[str, Any]:
    template = pod_template(workspace, plan, images, config_data, cache)
    metadata = object_meta(workspace, workspace.name)
    metadata["annotations"] = {ANNOTATION_REVISION: revision(template, plan)}
    spec: dict[str, Any] = {
        "replicas": plan.total_nodes,
        "podManagementPolicy": "Parallel",
        "serviceName": headless_name(workspace),
        "selector": {"matchLabels": selector_labels(workspace)},
        "template": copy.deepcopy(template),
    }
    claims = weight_cache.claim_templates(cache, selector_labels(workspace))
    if claims:  # each pod's own weight cache (ReadWriteOnce), removed with the StatefulSet
        spec["volumeClaimTemplates"] = claims
        spec["persistentVolumeClaimRetentionPolicy"] = dict(weight_cache.RETENTION)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata, "spec": spec}


def load_balancer_enabled(workspace: Workspace) -> bool:
    return (workspace.annotation(ANNOTATION_ENABLE_LB) or "").strip().lower() == "true"


def service(workspace: Workspace, plan: Plan) -> dict[str, Any]:
    """``<ws>``: port 80 to the API server; with several nodes only pod 0 serves it. As upstream,
    it also carries Ray's ports and publishes pods before they are ready."""
    selector = selector_labels(workspace)
    if plan.multi_node:
        selector[LABEL_POD_NAME] = f"{workspace.name}-0"
    ports: list[dict[str, Any]] = [
        {"name": pod.PORT_NAME, "port": SERVICE_PORT, "targetPort": pod.PORT, "protocol": "TCP"},
        {"name": "ray", "port": pod.RAY_PORT, "targetPort": pod.RAY_PORT, "protocol": "TCP"},
        {
            "name": "dashboard",
            "port": RAY_DASHBOARD_PORT,
            "targetPort": RAY_DASHBOARD_PORT,
            "protocol": "TCP",
        },
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(workspace, workspace.name),
        "spec": {
            "type": "LoadBalancer" if load_balancer_enabled(workspace) else "ClusterIP",
            "selector": selector,
            "ports": ports,
            "publishNotReadyAddresses": True,
        },
    }


def headless_service(workspace: Workspace, plan: Plan) -> dict[str, Any]:
    """``<ws>-headless``: stable DNS names for every pod, ready or not (Ray needs them early)."""
    ports: list[dict[str, Any]] = [
        {"name": pod.PORT_NAME, "port": pod.PORT, "targetPort": pod.PORT, "protocol": "TCP"}
    ]
    if plan.multi_node:
        ports.append({"name": "ray-gcs", "port": pod.RAY_PORT, "targetPort": pod.RAY_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(workspace, headless_name(workspace)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(workspace),
            "ports": ports,
        },
    }


def render(
    workspace: Workspace,
    plan: Plan,
    *,
    images: Images | None = None,
    config_data: dict[str, Any] | None = None,
    weight_cache: WeightCache | None = None,
) -> list[dict[str, Any]]:
    """The objects that run a Workspace, in apply order: Service, headless Service, StatefulSet.

    ``config_data`` is the data of the Workspace's inference ConfigMap (``inference.config``) when
    known; its hash lands on the pod template so that editing the ConfigMap restarts the pods.
    ``weight_cache``: the filled cache the pods read the weights from (see
    :mod:`pykaito.manifests.weight_cache`); None downloads them at start.
    """
    check_plan(workspace, plan)
    if plan.runtime == TEMPLATE_RUNTIME:
        return [
            service(workspace, plan),
            headless_service(workspace, plan),
            template_statefulset(workspace, plan),
        ]
    chosen = images or Images()
    return [
        service(workspace, plan),
        headless_service(workspace, plan),
        statefulset(workspace, plan, chosen, config_data, weight_cache),
    ]
