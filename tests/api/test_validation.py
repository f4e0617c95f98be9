"""The admission rules: each rule has a passing and a failing case with the expected field path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pykaito.api.loading import load_path
from pykaito.api.types import Workspace
from pykaito.api.validation import ValidationContext, validate, validate_or_raise
from pykaito.catalog.loader import Catalog, load_catalog
from pykaito.catalog.types import ModelPreset
from pykaito.errors import FieldError, ValidationError
from tests.api.conftest import example_params

SEED: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-4-mini-h100"},
    "resource": {
        "instanceType": "Standard_NC40ads_H100_v5",
        "labelSelector": {"matchLabels": {"apps": "phi-4-h100"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}
BYPASS = "kaito.sh/bypass-resource-checks"
RUNTIME = 'metadata.annotations["kaito.sh/runtime"]'
SECRET_PATH = "inference.preset.presetOptions.modelAccessSecret"
LLAMA = {"preset": {"name": "llama-3.3-70b-instruct", "presetOptions": {"modelAccessSecret": "hf-token"}}}
CPU = {"preset": {"name": "smollm2-135m-instruct"}}
CONFIG = "inference_config.yaml"


def make(change: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Workspace:
    """The seed Workspace with dotted keys replaced (None deletes) and top-level keys dropped."""
    doc = copy.deepcopy(SEED)
    for key in drop:
        doc.pop(key, None)
    for dotted, value in (change or {}).items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return Workspace.model_validate(doc, strict=True)


def gpu_node(name: str, labels: dict[str, str] | None = None, **gpu: str) -> dict[str, Any]:
    base = {"apps": "mine"}
    if gpu:
        base |= {f"nvidia.com/gpu.{k}": v for k, v in gpu.items()}
    return {"metadata": {"name": name, "labels": base | (labels or {})}}


BYO = {"resource.instanceType": None, "resource.labelSelector": {"matchLabels": {"apps": "mine"}}}
A100 = {"product": "NVIDIA-A100-SXM4-80GB", "count": "1", "memory": "81920"}
A10 = {"product": "NVIDIA-A10", "count": "1", "memory": "23028"}


def paths(errors: list[FieldError]) -> list[str]:
    return [e.path for e in errors]


@pytest.mark.parametrize("path", example_params())
def test_examples_are_valid(path: Path) -> None:
    docs = load_path(path)
    for ws in docs.workspaces:
        context = ValidationContext(
            config_maps=docs.config_maps() or None, secrets={"hf-token": {"HF_TOKEN"}}
        )
        assert validate(ws, context=context) == []


VALID = [
    pytest.param({}, None, id="seed"),
    pytest.param({"inference.preset.name": "microsoft/Phi-4-mini-instruct"}, None, id="catalog-model-id"),
    pytest.param({"inference.preset.name": "someorg/some-model-7b"}, None, id="any-hf-id"),
    pytest.param({"resource.instanceType": "Standard_NC999_future_v9"}, None, id="unknown-azure-gpu-sku"),
    pytest.param(
        {"inference": LLAMA, "resource.instanceType": "Standard_NC48ads_A100_v4"}, None, id="fits-two-gpus"
    ),
    pytest.param(
        {"inference": LLAMA, "resource.count": 2, "resource.instanceType": "Standard_NC24ads_A100_v4"},
        None,
        id="fits-two-nodes",
    ),
    pytest.param(
        {
            "inference": LLAMA,
            "resource.instanceType": "Standard_NV36ads_A10_v5",
            "metadata.annotations": {BYPASS: "True"},
        },
        None,
        id="too-small-bypassed",
    ),
    pytest.param({"inference": CPU, **BYO}, None, id="cpu-preset-own-nodes"),
    pytest.param(
        {"inference": CPU, "resource.instanceType": "Standard_D4s_v5"}, None, id="cpu-preset-cpu-type"
    ),
    pytest.param(
        {"inference": CPU, **BYO, "metadata.annotations": {"kaito.sh/runtime": "llamacpp"}},
        None,
        id="cpu-llamacpp",
    ),
    pytest.param({"metadata.annotations": {"kaito.sh/runtime": "transformers"}}, None, id="transformers"),
    pytest.param({"inference": {"template": {"spec": {"containers": []}}}}, None, id="template"),
    pytest.param(
        {
            "inference.adapters": [
                {"source": {"name": f"a{i}", "image": "x"}, "strength": s}
                for i, s in enumerate(["0", "1", "0.5", "1.0", ".25"])
            ]
        },
        None,
        id="adapters",
    ),
    pytest.param(
        {"resource.labelSelector": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}},
        None,
        id="exists",
    ),
]


@pytest.mark.parametrize(("change", "context"), VALID)
def test_valid(change: dict[str, Any], context: ValidationContext | None) -> None:
    assert validate(make(change), context=context) == []


INVALID = [
    # the object
    pytest.param({"metadata.name": "Phi_4"}, None, "metadata.name", "DNS-1123", id="name-uppercase"),
    pytest.param({"metadata.name": "a" * 64}, None, "metadata.name", "DNS-1123", id="name-too-long"),
    pytest.param({"metadata.name": None}, None, "metadata.name", "required", id="name-missing"),
    pytest.param({"metadata.namespace": "Team_A"}, None, "metadata.namespace", "DNS-1123", id="namespace"),
    pytest.param({"apiVersion": "kaito.sh/v1"}, None, "apiVersion", "kaito.sh/v1beta1", id="api-version"),
    # exactly one of inference / tuning
    pytest.param({"inference": None}, None, "inference", "required", id="neither"),
    pytest.param(
        {"tuning": {"method": "lora"}}, None, "tuning", "fine-tuning is not supported yet", id="both"
    ),
    pytest.param(
        {"inference": None, "tuning": {"method": "qlora"}}, None, "tuning", "not supported yet", id="tuning"
    ),
    # preset
    pytest.param(
        {"inference.preset.name": "phi-4-mini"},
        None,
        "inference.preset.name",
        "did you mean 'phi-4-mini-instruct'",
        id="preset-typo",
    ),
    pytest.param(
        {"inference.preset.name": "llama3"},
        None,
        "inference.preset.name",
        "kaito presets",
        id="preset-unknown",
    ),
    pytest.param({"inference.preset.name": ""}, None, "inference.preset.name", "required", id="preset-empty"),
    pytest.param(
        {"inference.template": {"spec": {}}}, None, "inference.template", "not both", id="preset-and-template"
    ),
    pytest.param(
        {"inference.preset": None}, None, "inference.preset", "required", id="no-preset-no-template"
    ),
    # adapters
    pytest.param(
        {"inference.adapters": [{"source": {"name": f"a{i}", "image": "x"}} for i in range(11)]},
        None,
        "inference.adapters",
        "at most 10",
        id="eleven-adapters",
    ),
    pytest.param(
        {"inference.adapters": [{"source": {"name": "My_Adapter", "image": "x"}}]},
        None,
        "inference.adapters[0].source.name",
        "DNS-1123",
        id="adapter-name",
    ),
    pytest.param(
        {
            "inference.adapters": [
                {"source": {"name": "a", "image": "x"}},
                {"source": {"name": "a", "image": "y"}},
            ]
        },
        None,
        "inference.adapters[1].source.name",
        "unique",
        id="adapter-duplicate",
    ),
    pytest.param(
        {"inference.adapters": [{"source": {"name": "a", "image": "x"}, "strength": "1.5"}]},
        None,
        "inference.adapters[0].strength",
        "between 0 and 1",
        id="strength-high",
    ),
    pytest.param(
        {"inference.adapters": [{"source": {"name": "a", "image": "x"}, "strength": "-0.1"}]},
        None,
        "inference.adapters[0].strength",
        "between 0 and 1",
        id="strength-negative",
    ),
    pytest.param(
        {"inference.adapters": [{"source": {"name": "a", "image": "x"}, "strength": "half"}]},
        None,
        "inference.adapters[0].strength",
        "decimal",
        id="strength-word",
    ),
    pytest.param(
        {"inference.adapters": [{"source": {"name": "a"}}]},
        None,
        "inference.adapters[0].source",
        "image",
        id="adapter-no-source",
    ),
    # access secret
    pytest.param(
        {
            "inference": {"preset": {"name": "llama-3.3-70b-instruct"}},
            "resource.instanceType": "Standard_NC80adis_H100_v5",
        },
        None,
        SECRET_PATH,
        "HF_TOKEN",
        id="token-missing",
    ),
    pytest.param(
        {"inference": LLAMA, "resource.instanceType": "Standard_NC80adis_H100_v5"},
        ValidationContext(secrets={}),
        SECRET_PATH,
        "not found",
        id="secret-not-found",
    ),
    pytest.param(
        {"inference": LLAMA, "resource.instanceType": "Standard_NC80adis_H100_v5"},
        ValidationContext(secrets={"hf-token": {"token"}}),
        SECRET_PATH,
        "no key HF_TOKEN",
        id="secret-without-key",
    ),
    # instance type and GPU memory
    pytest.param(
        {"resource.instanceType": "g5.xlarg"},
        None,
        "resource.instanceType",
        "did you mean 'g5.xlarge'",
        id="type-typo",
    ),
    pytest.param(
        {"resource.instanceType": "p9.mega"},
        None,
        "resource.instanceType",
        "unknown instance type",
        id="type-unknown",
    ),
    pytest.param(
        {"inference": {"preset": {"name": "deepseek-r1-0528"}}, "resource.instanceType": "g5.xlarge"},
        None,
        "resource.instanceType",
        "p5e.48xlarge (8 x H200, 1128 GiB)",
        id="too-small",
    ),
    pytest.param(
        {
            "inference": {"preset": {"name": "deepseek-r1-0528"}},
            "resource.instanceType": "Standard_NV36ads_A10_v5",
        },
        None,
        "resource.instanceType",
        "even 16 x Standard_NV36ads_A10_v5",
        id="too-small-for-any-node-count",
    ),
    pytest.param(
        {"inference": CPU, "resource.instanceType": "Standard_NC24ads_A100_v4"},
        None,
        "resource.instanceType",
        "runs on CPU",
        id="cpu-preset-gpu-type",
    ),
    pytest.param(
        {"inference": CPU, "resource.instanceType": "Standard_NC99_unlisted"},
        None,
        "resource.instanceType",
        "runs on CPU",
        id="cpu-preset-azure-gpu",
    ),
    pytest.param(
        {"resource.instanceType": "Standard_D4s_v5"},
        None,
        "resource.instanceType",
        "has no GPU",
        id="gpu-preset-cpu-type",
    ),
    pytest.param({"resource.count": 0}, None, "resource.count", "1 or more", id="count-zero"),
    # selector and own nodes
    pytest.param(
        {"resource.instanceType": None, "resource.labelSelector": None},
        None,
        "resource.labelSelector",
        "required",
        id="byo-no-selector",
    ),
    pytest.param(
        {"resource.labelSelector": {"matchLabels": {"apps": "bad value!"}}},
        None,
        "resource.labelSelector.matchLabels.apps",
        "label value",
        id="label-value",
    ),
    pytest.param(
        {"resource.labelSelector": {"matchLabels": {"-bad/key": "x"}}},
        None,
        'resource.labelSelector.matchLabels["-bad/key"]',
        "label key",
        id="label-key",
    ),
    pytest.param(
        {"resource.labelSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
        None,
        "resource.labelSelector.matchExpressions[0].values",
        "at least one",
        id="in-no-values",
    ),
    pytest.param(
        {
            "resource.labelSelector": {
                "matchExpressions": [{"key": "k", "operator": "Exists", "values": ["a"]}]
            }
        },
        None,
        "resource.labelSelector.matchExpressions[0].values",
        "no values",
        id="exists-values",
    ),
    pytest.param(
        BYO,
        ValidationContext(nodes=[]),
        "resource.labelSelector",
        "kubectl label node <node> apps=mine",
        id="byo-no-nodes",
    ),
    pytest.param(
        BYO,
        ValidationContext(nodes=[gpu_node("other", labels={"apps": "theirs"}, **A100)]),
        "resource.labelSelector",
        "no node matches",
        id="byo-nodes-do-not-match",
    ),
    pytest.param(
        BYO,
        ValidationContext(nodes=[gpu_node("cpu-1")]),
        "resource.labelSelector",
        "has an NVIDIA GPU",
        id="byo-no-gpu",
    ),
    pytest.param(
        {**BYO, "inference": LLAMA, "resource.count": 1},
        ValidationContext(nodes=[gpu_node("a10", **A10)]),
        "resource.labelSelector",
        "a10: 1 x NVIDIA-A10",
        id="byo-too-small",
    ),
    pytest.param(
        {**BYO, "resource.preferredNodes": ["gpu-9"]},
        ValidationContext(nodes=[gpu_node("gpu-1", **A100)]),
        "resource.preferredNodes[0]",
        "gpu-9",
        id="byo-preferred",
    ),
    # config
    pytest.param(
        {"inference.config": "cfg"},
        ValidationContext(config_maps={}),
        "inference.config",
        "not found",
        id="config-missing",
    ),
    pytest.param(
        {"inference.config": "cfg"},
        ValidationContext(config_maps={"cfg": {"other": ""}}),
        "inference.config",
        "no key inference_config.yaml",
        id="config-no-key",
    ),
    pytest.param(
        {"inference.config": "cfg"},
        ValidationContext(config_maps={"cfg": {CONFIG: "vllm: [\n"}}),
        "inference.config",
        "not valid YAML",
        id="config-bad-yaml",
    ),
    pytest.param(
        {"inference.config": "cfg"},
        ValidationContext(config_maps={"cfg": {CONFIG: "- a\n"}}),
        "inference.config",
        "mapping",
        id="config-list",
    ),
    pytest.param(
        {"inference.preset.name": "phi-4", "inference.config": "cfg"},
        ValidationContext(config_maps={"cfg": {CONFIG: "vllm:\n  max-model-len: 32768\n"}}),
        "inference.config",
        "exceeds phi-4's context length 16384",
        id="config-max-model-len",
    ),
    pytest.param(
        {"inference.config": "cfg"},
        ValidationContext(config_maps={"cfg": {CONFIG: "vllm:\n  max-model-len: lots\n"}}),
        "inference.config",
        "positive integer",
        id="config-max-model-len-word",
    ),
    pytest.param(
        {"inference.config": "Bad_Name"}, None, "inference.config", "ConfigMap name", id="config-name"
    ),
    # runtime annotation
    pytest.param(
        {"metadata.annotations": {"kaito.sh/runtime": "sglang"}},
        None,
        RUNTIME,
        "unknown runtime",
        id="runtime-unknown",
    ),
    pytest.param(
        {"metadata.annotations": {"kaito.sh/runtime": "llamacpp"}},
        None,
        RUNTIME,
        "runs on vllm or transformers",
        id="runtime-llamacpp-gpu",
    ),
    pytest.param(
        {"inference": CPU, **BYO, "metadata.annotations": {"kaito.sh/runtime": "vllm"}},
        None,
        RUNTIME,
        "runs on llamacpp",
        id="runtime-vllm-cpu",
    ),
]


@pytest.mark.parametrize(("change", "context", "path", "words"), INVALID)
def test_invalid(change: dict[str, Any], context: ValidationContext | None, path: str, words: str) -> None:
    errors = validate(make(change), context=context)
    assert path in paths(errors), errors
    message = next(e.message for e in errors if e.path == path)
    assert words in message


DEEPSEEK = {"preset": {"name": "deepseek-r1-0528"}}


def test_too_small_message_says_how_to_bypass_and_passes_with_it() -> None:
    change = {"inference": DEEPSEEK, "resource.instanceType": "Standard_NV36ads_A10_v5"}
    [error] = validate(make(change))
    assert "641.3 GiB" in error.message and "even 16 x Standard_NV36ads_A10_v5 (384 GiB)" in error.message
    assert 'kaito.sh/bypass-resource-checks: "True"' in error.message
    fits = error.message.split("instance types that fit: ")[1]
    assert fits.startswith("Standard_ND96isr_H200_v5 (8 x H200, 1128 GiB)")
    assert validate(make({**change, "metadata.annotations": {BYPASS: "True"}})) == []


def test_count_below_the_need_is_admitted_as_upstream() -> None:
    # upstream admits it; the planner uses the node count the model needs and says why
    change = {"inference": LLAMA, "resource.instanceType": "Standard_NC24ads_A100_v4", "resource.count": 1}
    assert validate(make(change)) == []


def test_suggestions_prefer_the_same_cloud() -> None:
    change = {"inference": DEEPSEEK, "resource.instanceType": "g5.xlarge"}
    [error] = validate(make(change))
    assert "p5e.48xlarge" in error.message
    assert "Standard_" not in error.message.split("instance types that fit: ")[1].split(";")[0]


def test_deprecated_preset_rejected_on_create_only() -> None:
    base = load_catalog()
    old = ModelPreset(
        name="phi-2",
        model_id="microsoft/phi-2",
        size_gib=5.0,
        context_length=2048,
        kv_bytes_per_token=1,
        deprecated=True,
    )
    catalog = Catalog(presets={**base.presets, "phi-2": old}, instance_types=base.instance_types)
    context = ValidationContext(catalog=catalog)
    ws = make({"inference.preset.name": "phi-2"})
    errors = validate(ws, context=context)
    assert paths(errors) == ["inference.preset.name"]
    assert "deprecated" in errors[0].message
    assert validate(ws, old=ws, context=context) == []


def test_byo_nodes_with_enough_gpu_pass() -> None:
    context = ValidationContext(nodes=[gpu_node("gpu-1", **A100), gpu_node("cpu-1")])
    assert validate(make({**BYO, "resource.preferredNodes": ["gpu-1"]}), context=context) == []
    two = ValidationContext(nodes=[gpu_node("gpu-1", **A100), gpu_node("gpu-2", **A100)])
    assert validate(make({**BYO, "inference": LLAMA, "resource.count": 2}), context=two) == []


def test_byo_node_known_by_instance_type_label() -> None:
    node = {
        "metadata": {
            "name": "n",
            "labels": {"apps": "mine", "node.kubernetes.io/instance-type": "Standard_NC40ads_H100_v5"},
        }
    }
    assert validate(make(BYO), context=ValidationContext(nodes=[node])) == []


def test_secret_present_with_key_passes() -> None:
    change = {"inference": LLAMA, "resource.instanceType": "Standard_NC80adis_H100_v5"}
    assert (
        validate(make(change), context=ValidationContext(secrets={"hf-token": frozenset({"HF_TOKEN"})})) == []
    )


def test_config_within_context_passes() -> None:
    data = {CONFIG: "vllm:\n  max-model-len: 131072\n  gpu-memory-utilization: 0.9\n"}
    assert (
        validate(make({"inference.config": "cfg"}), context=ValidationContext(config_maps={"cfg": data}))
        == []
    )


def test_every_error_is_reported_at_once() -> None:
    ws = make(
        {"metadata.name": "Bad_Name", "resource.instanceType": "nope", "inference.preset.name": "phi-4-mini"}
    )
    assert sorted(paths(validate(ws))) == ["inference.preset.name", "metadata.name", "resource.instanceType"]


UPDATES = [
    pytest.param({"resource.count": 2}, "resource.count", id="count"),
    pytest.param(
        {"resource.instanceType": "Standard_NC24ads_A100_v4"}, "resource.instanceType", id="instance-type"
    ),
    pytest.param(
        {"resource.labelSelector": {"matchLabels": {"apps": "other"}}},
        "resource.labelSelector",
        id="selector",
    ),
    pytest.param({"inference.preset.name": "phi-4"}, "inference.preset", id="preset"),
    pytest.param(
        {"inference.preset": None, "inference.template": {"spec": {}}},
        "inference.template",
        id="template-set",
    ),
    pytest.param({"inference": None, "tuning": {"method": "lora"}}, "tuning", id="to-tuning"),
]


@pytest.mark.parametrize(("change", "path"), UPDATES)
def test_immutable_on_update(change: dict[str, Any], path: str) -> None:
    old = make()
    errors = validate(make(change), old=old)
    assert path in paths(errors)
    assert any(w in next(e.message for e in errors if e.path == path) for w in ("cannot", "not supported"))
    if path != "tuning":
        assert validate(make(change)) == [], "the change alone is valid: only the update rule refuses it"


@pytest.mark.parametrize(
    ("before", "after", "allowed"),
    [
        pytest.param("", "Standard_NC40ads_H100_v5", True, id="set-when-empty"),
        pytest.param("Standard_NC40ads_H100_v5", "", True, id="cleared-for-own-nodes"),
        pytest.param("Standard_NC40ads_H100_v5", "Standard_NC24ads_A100_v4", False, id="changed"),
    ],
)
def test_instance_type_update_rules_follow_upstream(before: str, after: str, allowed: bool) -> None:
    def with_type(name: str) -> Workspace:
        return make({"resource.instanceType": name or None})

    errors = validate(with_type(after), old=with_type(before))
    assert ("resource.instanceType" not in paths(errors)) is allowed


def test_partition_cannot_change_on_update() -> None:
    mig = {"resource.instanceType": None, "resource.partition": {"mode": "mig", "profile": "3g.40gb"}}
    old = make(mig)
    new = make({**mig, "resource.partition": {"mode": "mig", "profile": "1g.10gb"}})
    assert validate(old) == []
    assert "resource.partition" in paths(validate(new, old=old))
    assert "resource.partition" not in paths(validate(make(mig), old=old))


def test_template_cannot_be_unset_on_update() -> None:
    old = make({"inference.preset": None, "inference.template": {"spec": {}}})
    new = make()
    assert "inference.template" in paths(validate(new, old=old))


def test_tuning_cannot_switch_to_inference() -> None:
    old = make({"inference": None, "tuning": {"method": "lora"}})
    assert "inference" in paths(validate(make(), old=old))


def test_update_may_change_adapters_and_unset_count_equals_one() -> None:
    old = make({"resource.count": 1})
    new = make(
        {
            "resource.count": None,
            "inference.adapters": [{"source": {"name": "a", "image": "x"}, "strength": "0.3"}],
        }
    )
    assert validate(new, old=old) == []


def test_validate_or_raise() -> None:
    validate_or_raise(make())
    with pytest.raises(ValidationError) as info:
        validate_or_raise(make({"resource.instanceType": "nope"}))
    assert [e.path for e in info.value.errors] == ["resource.instanceType"]
    assert str(info.value).startswith("resource.instanceType: unknown instance type 'nope'")


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param([{"metadata": None}], id="metadata-null"),
        pytest.param(
            [{"metadata": {"labels": {"apps": "mine", "nvidia.com/gpu.count": "lots"}}}], id="bad-count"
        ),
        pytest.param(["not-a-node"], id="string"),
    ],
)
def test_odd_nodes_never_raise(nodes: list[Any]) -> None:
    errors = validate(make(BYO), context=ValidationContext(nodes=nodes))
    assert all(isinstance(e, FieldError) for e in errors)


@pytest.mark.parametrize(
    "node",
    [
        pytest.param({"metadata": ["not", "a", "mapping"]}, id="metadata-list"),
        pytest.param({"metadata": {"name": "n", "labels": ["apps=mine"]}}, id="labels-list"),
        pytest.param({"metadata": {"labels": {"apps": "mine"}}, "status": "Ready"}, id="status-string"),
    ],
)
def test_malformed_node_objects_never_raise(node: dict[str, Any]) -> None:
    errors = validate(make(BYO), context=ValidationContext(nodes=[node]))
    assert "resource.labelSelector" in paths(errors)
