"""What an InferenceSet renders: replicas, its Service, the KEDA ScaledObject, InferencePool and HTTPRoute."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from pykaito.api.setrules import parse_set
from pykaito.manifests.inferenceset import (
    MetricSource,
    autoscaling,
    http_route,
    inference_pool,
    render_children,
    scaled_object,
    set_service,
    template_hash,
)
from tests.manifests.builders import validate_strict
from tests.manifests.extension_schemas import HTTP_ROUTE, INFERENCE_POOL, SCALED_OBJECT

EXTERNAL = MetricSource(external_scaler_address="pykaito-scaler.kaito-system.svc:9090")
PROMETHEUS = MetricSource(prometheus_address="http://prometheus.monitoring:9090")
BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "InferenceSet",
    "metadata": {
        "name": "phi-4-mini",
        "namespace": "default",
        "uid": "5a1c0b2e-3333-4c2b-9e5f-0123",
        "annotations": {
            "scaledobject.kaito.sh/auto-provision": "true",
            "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
            "scaledobject.kaito.sh/threshold": "10",
        },
    },
    "spec": {
        "replicas": 2,
        "nodeCountLimit": 5,
        "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
        "template": {
            "inference": {"preset": {"accessMode": "public", "name": "phi-4-mini-instruct"}},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
        },
    },
}


def make(annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    body = copy.deepcopy(BASE)
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    body["spec"].update(spec)
    return parse_set(body)


def test_children_are_owned_named_by_index_and_stamped_with_the_template() -> None:
    s = make()
    children = render_children(s)
    assert [c["metadata"]["name"] for c in children] == ["phi-4-mini-0", "phi-4-mini-1"]
    for child in children:
        meta = child["metadata"]
        assert meta["labels"]["inferenceset.kaito.sh/created-by"] == "phi-4-mini"
        assert meta["annotations"]["inferenceset.kaito.sh/template-hash"] == template_hash(s)
        assert meta["ownerReferences"][0]["uid"] == "5a1c0b2e-3333-4c2b-9e5f-0123"
        assert child["resource"] == {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
        }
    assert template_hash(make(replicas=7)) == template_hash(s)  # scaling is not a rollout
    changed = make(template={"inference": {"preset": {"name": "phi-4-mini-instruct"}}})
    assert template_hash(changed) != template_hash(s)


def test_the_set_service_selects_every_replica_pod() -> None:
    service = set_service(make())
    assert service["spec"]["selector"] == {
        "inferenceset.kaito.sh/created-by": "phi-4-mini",
        "apps.kubernetes.io/pod-index": "0",
    }
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 5000
    validate_strict(service)


@pytest.mark.parametrize(("source", "trigger"), [(EXTERNAL, "external"), (PROMETHEUS, "prometheus")])
def test_scaled_object_targets_the_scale_subresource_and_validates(
    source: MetricSource, trigger: str
) -> None:
    s = make()
    obj = scaled_object(s, autoscaling(s, nodes_per_replica=1), source)
    jsonschema.validate(obj, SCALED_OBJECT)
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "name": "phi-4-mini",
    }
    (only,) = spec["triggers"]
    assert only["type"] == trigger and only["metricType"] == "Value"
    assert only["metadata"]["threshold"] == "10"
    if trigger == "prometheus":
        assert "vllm:num_requests_waiting" in only["metadata"]["query"]
    else:
        assert only["metadata"]["metricName"] == "vllm:num_requests_waiting"
        assert only["metadata"]["inferenceSetName"] == "phi-4-mini"


def test_max_replicas_never_passes_the_node_count_limit() -> None:
    asked = {"scaledobject.kaito.sh/auto-provision": "true", "scaledobject.kaito.sh/max-replicas": "20"}
    s = make(asked, nodeCountLimit=6)
    assert autoscaling(s, nodes_per_replica=2).max_replicas == 3
    assert autoscaling(s, nodes_per_replica=2).capped_by_node_limit
    assert autoscaling(make(asked, nodeCountLimit=None), nodes_per_replica=2).max_replicas == 20
    # without max-replicas (upstream's examples), as many as the node limit allows
    assert autoscaling(make(), nodes_per_replica=1).max_replicas == 5


def test_defaults_and_scale_to_zero() -> None:
    plain = autoscaling(make({"scaledobject.kaito.sh/auto-provision": "true"}), 1)
    assert (plain.metric_name, plain.threshold, plain.min_replicas) == ("vllm:num_requests_waiting", 10.0, 1)
    zero = make(
        {
            "scaledobject.kaito.sh/auto-provision": "true",
            "scaledobject.kaito.sh/min-replicas": "0",
            "scaledobject.kaito.sh/activation-threshold": "0.5",
            "scaledobject.kaito.sh/scale-down-cooldown": "120",
        }
    )
    obj = scaled_object(zero, autoscaling(zero, 1), EXTERNAL)
    jsonschema.validate(obj, SCALED_OBJECT)
    assert obj["spec"]["minReplicaCount"] == 0 and obj["spec"]["cooldownPeriod"] == 120
    assert obj["spec"]["triggers"][0]["metadata"]["activationThreshold"] == "0.5"
    assert not autoscaling(make({}), 1).enabled
    assert not autoscaling(make({"scaledobject.kaito.sh/auto-provision": "false"}), 1).enabled


def test_inference_pool_and_route_validate_and_point_at_each_other() -> None:
    s = make()
    pool = inference_pool(s, "inference-gateway-epp")
    route = http_route(s, "inference-gateway")
    jsonschema.validate(pool, INFERENCE_POOL)
    jsonschema.validate(route, HTTP_ROUTE)
    assert pool["spec"]["selector"]["matchLabels"] == {
        "inferenceset.kaito.sh/created-by": "phi-4-mini",
        "apps.kubernetes.io/pod-index": "0",
    }
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["kind"], backend["name"]) == ("InferencePool", pool["metadata"]["name"])


@pytest.mark.parametrize(
    ("schema", "broken"),
    [
        pytest.param(
            SCALED_OBJECT, lambda o: o["spec"].update(maxReplicas=3), id="scaledobject-unknown-field"
        ),
        pytest.param(INFERENCE_POOL, lambda o: o["spec"].pop("targetPorts"), id="pool-missing-ports"),
        pytest.param(
            HTTP_ROUTE,
            lambda o: o["spec"]["rules"][0]["matches"][0]["path"].update(value="v1"),
            id="route-path",
        ),
    ],
)
def test_the_schemas_catch_mistakes(schema: dict[str, Any], broken: Any) -> None:
    s = make()
    objects = {
        id(SCALED_OBJECT): scaled_object(s, autoscaling(s, 1), EXTERNAL),
        id(INFERENCE_POOL): inference_pool(s, "epp"),
        id(HTTP_ROUTE): http_route(s, "gw"),
    }
    obj = copy.deepcopy(objects[id(schema)])
    broken(obj)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, schema)
