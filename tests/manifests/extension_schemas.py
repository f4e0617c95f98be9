"""JSON schemas of the custom resources an InferenceSet renders, written from their projects' docs.

- KEDA ScaledObject (keda.sh/v1alpha1; keda.sh docs "Scaling Deployments, StatefulSets & Custom
  Resources" and the external / prometheus scaler pages);
- InferencePool (inference.networking.k8s.io/v1; Gateway API Inference Extension API reference);
- HTTPRoute (gateway.networking.k8s.io/v1; Gateway API reference).

Only the fields these objects may carry are listed, and unknown fields are refused, so a typo or a
field in the wrong place fails validation.
"""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
INT = {"type": "integer"}


def strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
    }


OBJECT_META = strict(
    {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": STRING,
        "labels": {"type": "object", "additionalProperties": STRING},
        "annotations": {"type": "object", "additionalProperties": STRING},
        "ownerReferences": {
            "type": "array",
            "items": strict(
                {
                    "apiVersion": STRING,
                    "kind": STRING,
                    "name": STRING,
                    "uid": STRING,
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
                ("apiVersion", "kind", "name", "uid"),
            ),
        },
    },
    ("name",),
)

_HPA_RULES = strict(
    {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": strict(
                {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
                ("type", "value", "periodSeconds"),
            ),
        },
    }
)
_NUMBER_TEXT = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
_EXTERNAL_TRIGGER = strict(
    {
        "type": {"const": "external"},
        "name": STRING,
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "metadata": {
            "type": "object",
            "required": ["scalerAddress"],
            "properties": {
                "scalerAddress": {"type": "string", "pattern": r"^[^:/]+:\d+$"},
                "enableTLS": {"enum": ["true", "false"]},
                "unsafeSsl": {"enum": ["true", "false"]},
                "caCert": STRING,
            },
            "additionalProperties": STRING,  # the rest is passed to the scaler as scalerMetadata
        },
        "authenticationRef": strict({"name": STRING, "kind": STRING}, ("name",)),
    },
    ("type", "metadata"),
)
_PROMETHEUS_TRIGGER = strict(
    {
        "type": {"const": "prometheus"},
        "name": STRING,
        "metricType": {"enum": ["AverageValue", "Value"]},
        "metadata": strict(
            {
                "serverAddress": {"type": "string", "pattern": "^https?://"},
                "query": {"type": "string", "minLength": 1},
                "threshold": _NUMBER_TEXT,
                "activationThreshold": _NUMBER_TEXT,
                "namespace": STRING,
                "unsafeSsl": {"enum": ["true", "false"]},
                "ignoreNullValues": {"enum": ["true", "false"]},
            },
            ("serverAddress", "query", "threshold"),
        ),
        "authenticationRef": strict({"name": STRING, "kind": STRING}, ("name",)),
    },
    ("type", "metadata"),
)
SCALED_OBJECT = strict(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": OBJECT_META,
        "spec": strict(
            {
                "scaleTargetRef": strict(
                    {"apiVersion": STRING, "kind": STRING, "name": STRING, "envSourceContainerName": STRING},
                    ("name",),
                ),
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": strict(
                    {"failureThreshold": INT, "replicas": INT}, ("failureThreshold", "replicas")
                ),
                "advanced": strict(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": strict(
                            {
                                "name": STRING,
                                "behavior": strict({"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES}),
                            }
                        ),
                    }
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"oneOf": [_EXTERNAL_TRIGGER, _PROMETHEUS_TRIGGER]},
                },
            },
            ("scaleTargetRef", "triggers"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

_PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}
INFERENCE_POOL = strict(
    {
        "apiVersion": {"const": "inference.networking.k8s.io/v1"},
        "kind": {"const": "InferencePool"},
        "metadata": OBJECT_META,
        "spec": strict(
            {
                "selector": strict(
                    {"matchLabels": {"type": "object", "minProperties": 1, "additionalProperties": STRING}},
                    ("matchLabels",),
                ),
                "targetPorts": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 8,
                    "items": strict({"number": _PORT_NUMBER}, ("number",)),
                },
                "endpointPickerRef": strict(
                    {
                        "group": STRING,
                        "kind": STRING,
                        "name": {"type": "string", "minLength": 1},
                        "port": strict({"number": _PORT_NUMBER}, ("number",)),
                        "failureMode": {"enum": ["FailOpen", "FailClose"]},
                    },
                    ("name",),
                ),
            },
            ("selector", "targetPorts", "endpointPickerRef"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

_PARENT_REF = strict(
    {
        "group": STRING,
        "kind": STRING,
        "namespace": STRING,
        "name": STRING,
        "sectionName": STRING,
        "port": _PORT_NUMBER,
    },
    ("name",),
)
HTTP_ROUTE = strict(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": OBJECT_META,
        "spec": strict(
            {
                "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": _PARENT_REF},
                "hostnames": {"type": "array", "items": STRING},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": strict(
                        {
                            "name": STRING,
                            "matches": {
                                "type": "array",
                                "items": strict(
                                    {
                                        "path": strict(
                                            {
                                                "type": {
                                                    "enum": ["Exact", "PathPrefix", "RegularExpression"]
                                                },
                                                "value": {"type": "string", "pattern": "^/"},
                                            }
                                        ),
                                        "method": STRING,
                                    }
                                ),
                            },
                            "backendRefs": {
                                "type": "array",
                                "items": strict(
                                    {
                                        "group": STRING,
                                        "kind": STRING,
                                        "name": STRING,
                                        "namespace": STRING,
                                        "port": _PORT_NUMBER,
                                        "weight": INT,
                                    },
                                    ("name",),
                                ),
                            },
                            "timeouts": strict({"request": STRING, "backendRequest": STRING}),
                        }
                    ),
                },
            },
            ("parentRefs",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
