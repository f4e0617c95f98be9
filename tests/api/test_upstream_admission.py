"""Upstream KAITO's admission unit cases that need no cluster, as a table.

Each case is ours, written from one of upstream's (api/v1beta1/workspace_validation_test.go): the
same input, the same verdict. Where upstream's error wording differs, we check our field path and
that the message says what to do. Cases that hinge on upstream-only machinery (feature gates, image
packaged presets, a Go panic) are left out; DESIGN.md lists where pykaito is deliberately stricter.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pykaito.api.loading import SchemaError, load_text, parse_workspace
from pykaito.api.types import Workspace
from pykaito.api.validation import ValidationContext, validate

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "valid-name", "namespace": "kaito"},
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "test"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}
BYO = {"resource.instanceType": None}
TEMPLATE = {"spec": {"containers": [{"name": "server", "image": "registry.example/server:1"}]}}
CONFIG = "inference_config.yaml"


def make(change: dict[str, Any] | None = None) -> Workspace:
    doc = copy.deepcopy(BASE)
    for dotted, value in (change or {}).items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return parse_workspace(doc)


def paths(errors: list[Any]) -> set[str]:
    return {e.path for e in errors}


def adapters(n: int, *, name: str = "adapter-{i}") -> list[dict[str, Any]]:
    return [
        {"source": {"name": name.format(i=i), "image": "registry.example/a:1"}, "strength": "1.0"}
        for i in range(n)
    ]


CREATE = [
    # TestValidatePartition
    pytest.param(
        {**BYO, "resource.partition": {"mode": "accelerator", "count": 2}}, None, None, id="accelerator-valid"
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "accelerator"}},
        None,
        "resource.partition.count",
        id="accelerator-missing-count",
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "accelerator", "count": 2, "profile": "1g.10gb"}},
        None,
        "resource.partition.profile",
        id="accelerator-with-profile",
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "1g.10gb"}}, None, None, id="mig-valid"
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "1g.10gb", "count": 2}},
        None,
        "resource.partition.count",
        id="mig-with-count",
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "9g.99gb"}},
        None,
        "resource.partition.profile",
        id="mig-unknown-profile",
    ),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "big"}},
        None,
        "resource.partition.profile",
        id="mig-malformed-profile",
    ),
    pytest.param(
        {"resource.partition": {"mode": "mig", "profile": "1g.10gb"}},
        None,
        "resource.partition",
        id="partition-needs-own-nodes",
    ),
    # TestValidateMIGModelFit
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "1g.10gb"}}, None, None, id="mig-model-fits"
    ),
    pytest.param(
        {
            **BYO,
            "resource.partition": {"mode": "mig", "profile": "1g.10gb"},
            "inference.preset.name": "phi-4",
        },
        None,
        "resource.partition",
        id="mig-model-exceeds-slice",
    ),
    pytest.param(
        {
            **BYO,
            "resource.partition": {"mode": "mig", "profile": "1g.10gb"},
            "inference.preset.name": "phi-4",
            "metadata.annotations": {"kaito.sh/bypass-resource-checks": "True"},
        },
        None,
        None,
        id="mig-bypass-allows-oversized",
    ),
    # TestInferenceSpecValidateCreate
    pytest.param(
        {"inference.preset.name": "Invalid-Preset-Name"},
        None,
        "inference.preset.name",
        id="invalid-preset-name",
    ),
    pytest.param({"inference.preset": None, "inference.template": TEMPLATE}, None, None, id="only-template"),
    pytest.param({"inference.preset": None}, None, "inference.preset", id="neither-preset-nor-template"),
    pytest.param({"inference.template": TEMPLATE}, None, "inference.template", id="preset-and-template"),
    pytest.param(
        {"inference.adapters": adapters(11)}, None, "inference.adapters", id="more-than-10-adapters"
    ),
    pytest.param({"inference.adapters": adapters(5)}, None, None, id="valid-adapters"),
    pytest.param(
        {"inference.adapters": adapters(2, name="adapter")},
        None,
        "inference.adapters[1].source.name",
        id="duplicate-adapters",
    ),
    pytest.param({}, None, None, id="valid-preset"),
    pytest.param(
        {"inference.config": "valid-config"},
        ValidationContext(config_maps={"valid-config": {CONFIG: "vllm:\n  max-model-len: 2048\n"}}),
        None,
        id="config-with-valid-configmap",
    ),
    pytest.param(
        {"inference.config": "missing-key-config"},
        ValidationContext(config_maps={"missing-key-config": {"other": "x"}}),
        "inference.config",
        id="config-without-the-key",
    ),
    pytest.param(
        {
            "inference.preset.name": "llama-3.1-8b-instruct",
            "inference.preset.presetOptions": {"modelAccessSecret": "hf"},
        },
        None,
        None,
        id="download-with-access-secret",
    ),
    pytest.param(
        {"inference.preset.name": "llama-3.1-8b-instruct"},
        None,
        "inference.preset.presetOptions.modelAccessSecret",
        id="download-without-access-secret",
    ),
    # TestInferenceConfigMapValidation
    pytest.param(
        {"inference.preset.name": "phi-3-mini-4k-instruct", "inference.config": "too-long"},
        ValidationContext(config_maps={"too-long": {CONFIG: "vllm:\n  max-model-len: 20480\n"}}),
        "inference.config",
        id="max-model-len-exceeds-the-model",
    ),
    # TestWorkspaceValidateName
    pytest.param({"metadata.name": "phi-3.5-mini"}, None, "metadata.name", id="name-with-a-dot"),
    pytest.param({"metadata.name": "-mini"}, None, "metadata.name", id="name-starts-with-dash"),
    # TestWorkspaceValidatePerformanceModeAnnotation
    pytest.param(
        {"metadata.annotations": {"kaito.sh/performance-mode": "balanced"}},
        None,
        None,
        id="performance-balanced",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/performance-mode": "interactivity"}},
        None,
        None,
        id="performance-interactivity",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/performance-mode": "throughput"}},
        None,
        None,
        id="performance-throughput",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/performance-mode": "turbo"}},
        None,
        'metadata.annotations["kaito.sh/performance-mode"]',
        id="performance-unknown",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/use-local-weights": "true"}}, None, None, id="local-weights-true"
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/use-local-weights": "false"}},
        None,
        None,
        id="local-weights-false",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/use-local-weights": "yes"}},
        None,
        'metadata.annotations["kaito.sh/use-local-weights"]',
        id="local-weights-not-boolean",
    ),
    # validateNodeImageFamilyAnnotation
    pytest.param(
        {"metadata.annotations": {"kaito.sh/node-image-family": "AzureLinux"}},
        None,
        None,
        id="image-family-azurelinux",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/node-image-family": "ubuntu"}},
        None,
        None,
        id="image-family-ubuntu",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/node-image-family": "windows"}},
        None,
        'metadata.annotations["kaito.sh/node-image-family"]',
        id="image-family-unsupported",
    ),
]


@pytest.mark.parametrize(("change", "context", "path"), CREATE)
def test_create(change: dict[str, Any], context: ValidationContext | None, path: str | None) -> None:
    errors = validate(make(change), context=context)
    if path is None:
        assert errors == []
    else:
        assert path in paths(errors), errors
        assert all(len(e.message) > 20 for e in errors)  # says what is wrong and what to do


def test_unsupported_partition_mode_is_a_schema_error() -> None:
    text = """
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: ws}
resource: {labelSelector: {matchLabels: {a: b}}, partition: {mode: bogus}}
inference: {preset: {name: phi-4-mini-instruct}}
"""
    with pytest.raises(SchemaError) as caught:
        load_text(text)
    assert "resource.partition.mode" in str(caught.value) and "mig" in str(caught.value)


UPDATE = [
    # TestResourceSpecValidateUpdate
    pytest.param({"resource.count": 10}, {"resource.count": 5}, "resource.count", id="count-immutable"),
    pytest.param(
        {"resource.instanceType": "Standard_NC24ads_A100_v4"},
        {"resource.instanceType": "Standard_NC48ads_A100_v4"},
        "resource.instanceType",
        id="instance-type-changed",
    ),
    pytest.param({"resource.instanceType": None}, {}, None, id="instance-type-set-initially"),
    pytest.param({}, {}, None, id="instance-type-kept"),
    pytest.param({}, {"resource.instanceType": None}, None, id="instance-type-cleared-for-own-nodes"),
    pytest.param(BYO, BYO, None, id="instance-type-already-empty"),
    pytest.param(
        {},
        {"resource.labelSelector": {"matchLabels": {"apps": "other"}}},
        "resource.labelSelector",
        id="label-selector-immutable",
    ),
    pytest.param({"resource.count": 5}, {"resource.count": 5}, None, id="all-unchanged"),
    pytest.param(
        {**BYO, "resource.partition": {"mode": "mig", "profile": "1g.10gb"}},
        {**BYO, "resource.partition": {"mode": "mig", "profile": "2g.20gb"}},
        "resource.partition",
        id="partition-immutable",
    ),
    # TestInferenceSpecValidateUpdate
    pytest.param({}, {"inference.preset.name": "phi-4"}, "inference.preset", id="preset-immutable"),
    pytest.param(
        {"inference.preset": None, "inference.template": TEMPLATE},
        {"inference.template": None, "inference.preset": {"name": "phi-4-mini-instruct"}},
        "inference.template",
        id="template-unset",
    ),
    pytest.param(
        {},
        {"inference.preset": None, "inference.template": TEMPLATE},
        "inference.template",
        id="template-set",
    ),
    pytest.param({}, {"inference.adapters": adapters(2)}, None, id="adapters-may-change"),
    # TestWorkspaceValidateUpdate
    pytest.param({}, {"inference": None, "tuning": {"method": "lora"}}, "tuning", id="inference-to-tuning"),
]


@pytest.mark.parametrize(("before", "after", "path"), UPDATE)
def test_update(before: dict[str, Any], after: dict[str, Any], path: str | None) -> None:
    old = make(before)
    new = make({**before, **after})
    errors = validate(new, old=old)
    if path is None:
        assert errors == []
    else:
        assert path in paths(errors), errors
