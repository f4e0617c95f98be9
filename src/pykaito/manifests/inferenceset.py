"""Pure rendering of what an InferenceSet owns: its child Workspaces, one Service across the ready
replicas, a KEDA ScaledObject on its ``/scale`` and, optionally, the Gateway API inference extension's
InferencePool and HTTPRoute.

    render_children(set)                     the Workspace of every replica (owner reference, template hash)
    set_service(set)                         ``<set>``: port 80 to every ready replica's server
    autoscaling(set, source, nodes)          the ScaledObject settings read from the annotations
    scaled_object(set, scaling, source)      keda.sh/v1alpha1 ScaledObject targeting the set
    inference_pool(set) / http_route(...)    the InferencePool and the HTTPRoute to it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pykaito.api.inferenceset import (
    ANNOTATION_ACTIVATION_THRESHOLD,
    ANNOTATION_AUTO_PROVISION,
    ANNOTATION_MAX_REPLICAS,
    ANNOTATION_METRIC_NAME,
    ANNOTATION_MIN_REPLICAS,
    ANNOTATION_SCALE_DOWN_COOLDOWN,
    ANNOTATION_SCALE_UP_COOLDOWN,
    ANNOTATION_TEMPLATE_HASH,
    ANNOTATION_THRESHOLD,
    DEFAULT_METRIC_NAME,
    IS_API_VERSION,
    IS_KIND,
    LABEL_CREATED_BY,
    InferenceSet,
)
from pykaito.api.setrules import child_dict
from pykaito.manifests import pod
from pykaito.manifests.meta import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    controller_reference,
    owned_meta,
    sha256_hex,
)

SERVICE_PORT = 80
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
"""Set by the StatefulSet controller (Kubernetes 1.28+): only pod 0 of a replica serves the API."""
DEFAULT_THRESHOLD = 10.0
DEFAULT_SCALE_UP_COOLDOWN = 60
DEFAULT_SCALE_DOWN_COOLDOWN = 300
POLLING_INTERVAL = 15
EXTERNAL_SCALER_TRIGGER = "external"
PROMETHEUS_TRIGGER = "prometheus"


def template_hash(inference_set: InferenceSet) -> str:
    """What a rollout compares: the template and the selector (replicas and annotations excluded)."""
    spec = inference_set.spec
    return sha256_hex(
        {
            "template": spec.template.model_dump(mode="json", exclude_none=True),
            "labelSelector": spec.labelSelector.model_dump(mode="json", exclude_none=True),
        }
    )[:16]


def owner_reference(inference_set: InferenceSet) -> dict[str, Any] | None:
    uid = getattr(inference_set.metadata, "uid", None)
    return controller_reference(IS_API_VERSION, IS_KIND, inference_set.name, uid)


def set_labels(inference_set: InferenceSet) -> dict[str, str]:
    return {LABEL_CREATED_BY: inference_set.name, LABEL_MANAGED_BY: MANAGED_BY}


def _meta(inference_set: InferenceSet, name: str) -> dict[str, Any]:
    labels = set_labels(inference_set)
    return owned_meta(name, inference_set.namespace, labels, owner_reference(inference_set))


def render_child(inference_set: InferenceSet, index: int) -> dict[str, Any]:
    """Replica ``index``: the template as a Workspace, owned by the set, stamped with the template hash."""
    child = child_dict(inference_set, index)
    meta = child["metadata"]
    meta.setdefault("labels", {})[LABEL_MANAGED_BY] = MANAGED_BY
    meta.setdefault("annotations", {})[ANNOTATION_TEMPLATE_HASH] = template_hash(inference_set)
    owner = owner_reference(inference_set)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return child


def render_children(inference_set: InferenceSet) -> list[dict[str, Any]]:
    return [render_child(inference_set, i) for i in range(inference_set.replicas)]


def serving_pods(inference_set: InferenceSet) -> dict[str, str]:
    """The label selector of every replica's serving pod (pod 0; multi-node workers do not serve)."""
    return {LABEL_CREATED_BY: inference_set.name, LABEL_POD_INDEX: "0"}


def set_service(inference_set: InferenceSet) -> dict[str, Any]:
    """``<set>``: one ClusterIP Service over every replica's serving pod (only ready ones get traffic)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inference_set, inference_set.name),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_pods(inference_set),
            "ports": [
                {"name": pod.PORT_NAME, "port": SERVICE_PORT, "targetPort": pod.PORT, "protocol": "TCP"}
            ],
        },
    }


# --- autoscaling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSource:
    """Where KEDA reads the metric: a Prometheus server, or the operator's external scaler."""

    prometheus_address: str = ""
    external_scaler_address: str = ""  # host:port of the operator's gRPC external scaler
    external_scaler_ca_secret: str = ""  # a Secret holding the scaler's CA (ca.crt): KEDA verifies TLS


@dataclass(frozen=True)
class Autoscaling:
    """The ScaledObject's settings, from the set's ``scaledobject.kaito.sh/*`` annotations."""

    enabled: bool
    metric_name: str = DEFAULT_METRIC_NAME
    threshold: float = DEFAULT_THRESHOLD
    activation_threshold: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1
    scale_up_cooldown: int = DEFAULT_SCALE_UP_COOLDOWN
    scale_down_cooldown: int = DEFAULT_SCALE_DOWN_COOLDOWN
    capped_by_node_limit: bool = False


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def autoscaling(inference_set: InferenceSet, nodes_per_replica: int | None = None) -> Autoscaling:
    """The autoscaling the annotations ask for; ``max_replicas`` never lets the set pass nodeCountLimit."""
    flag = (inference_set.annotation(ANNOTATION_AUTO_PROVISION) or "").strip().lower()
    if flag != "true":
        return Autoscaling(enabled=False)
    replicas = inference_set.replicas
    low = _int(inference_set.annotation(ANNOTATION_MIN_REPLICAS), 1)
    limit = inference_set.spec.nodeCountLimit or 0
    most = max(limit // nodes_per_replica, 0) if limit > 0 and nodes_per_replica else None
    # without max-replicas: as many as nodeCountLimit allows, else the replicas asked for
    high = _int(inference_set.annotation(ANNOTATION_MAX_REPLICAS), most or max(replicas, low, 1))
    capped = False
    if most is not None and high > most:
        high, capped = most, True
    high = max(high, 1)
    return Autoscaling(
        enabled=True,
        metric_name=inference_set.annotation(ANNOTATION_METRIC_NAME) or DEFAULT_METRIC_NAME,
        threshold=_float(inference_set.annotation(ANNOTATION_THRESHOLD), DEFAULT_THRESHOLD),
        activation_threshold=_float(inference_set.annotation(ANNOTATION_ACTIVATION_THRESHOLD), 0.0),
        min_replicas=min(low, high),
        max_replicas=high,
        scale_up_cooldown=_int(
            inference_set.annotation(ANNOTATION_SCALE_UP_COOLDOWN), DEFAULT_SCALE_UP_COOLDOWN
        ),
        scale_down_cooldown=_int(
            inference_set.annotation(ANNOTATION_SCALE_DOWN_COOLDOWN), DEFAULT_SCALE_DOWN_COOLDOWN
        ),
        capped_by_node_limit=capped,
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def prometheus_query(inference_set: InferenceSet, metric: str) -> str:
    """The per-replica average of ``metric`` over the set's serving pods."""
    pods = f'namespace="{inference_set.namespace}",pod=~"{inference_set.name}-[0-9]+-0"'
    return f"avg(avg by (pod) ({metric}{{{pods}}}))"


def trigger(inference_set: InferenceSet, scaling: Autoscaling, source: MetricSource) -> dict[str, Any]:
    common = {
        "threshold": _number(scaling.threshold),
        "activationThreshold": _number(scaling.activation_threshold),
    }
    if source.prometheus_address:
        return {
            "type": PROMETHEUS_TRIGGER,
            "metricType": "Value",
            "metadata": {
                "serverAddress": source.prometheus_address,
                "query": prometheus_query(inference_set, scaling.metric_name),
                **common,
            },
        }
    result: dict[str, Any] = {
        "type": EXTERNAL_SCALER_TRIGGER,
        "metricType": "Value",
        "metadata": {
            "scalerAddress": source.external_scaler_address,
            "inferenceSetName": inference_set.name,
            "inferenceSetNamespace": inference_set.namespace,
            "metricName": scaling.metric_name,
            **common,
        },
    }
    if source.external_scaler_ca_secret:
        result["metadata"]["enableTLS"] = "true"
    return result


def scaled_object(inference_set: InferenceSet, scaling: Autoscaling, source: MetricSource) -> dict[str, Any]:
    """keda.sh/v1alpha1 ScaledObject: KEDA drives the set's /scale from the metric's per-replica average."""
    meta = _meta(inference_set, inference_set.name)
    meta["annotations"] = {"scaledobject.kaito.sh/managed-by": MANAGED_BY}

    def policy(cooldown: int) -> dict[str, Any]:
        return {
            "stabilizationWindowSeconds": cooldown,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": max(cooldown, 15)}],
        }

    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": IS_API_VERSION, "kind": IS_KIND, "name": inference_set.name},
            "pollingInterval": POLLING_INTERVAL,
            "cooldownPeriod": scaling.scale_down_cooldown,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": policy(scaling.scale_up_cooldown),
                        "scaleDown": policy(scaling.scale_down_cooldown),
                    }
                }
            },
            "triggers": [trigger(inference_set, scaling, source)],
        },
    }


# --- Gateway API inference extension -----------------------------------------------------------


def inference_pool(inference_set: InferenceSet, endpoint_picker: str) -> dict[str, Any]:
    """An InferencePool over the set's pods; ``endpoint_picker`` is the picker Service's name."""
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": _meta(inference_set, inference_set.name),
        "spec": {
            "selector": {"matchLabels": serving_pods(inference_set)},
            "targetPorts": [{"number": pod.PORT}],
            "endpointPickerRef": {"name": endpoint_picker, "port": {"number": 9002}},
        },
    }


def http_route(inference_set: InferenceSet, gateway: str) -> dict[str, Any]:
    """An HTTPRoute from ``gateway`` to the set's InferencePool for the OpenAI API paths."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(inference_set, inference_set.name),
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {
                            "group": "inference.networking.k8s.io",
                            "kind": "InferencePool",
                            "name": inference_set.name,
                        }
                    ],
                }
            ],
        },
    }
