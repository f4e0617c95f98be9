"""kaito.sh/use-local-weights: weights already on the node, mounted read-only, the hub switched off."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.api.validation import validate
from pykaito.manifests import render
from tests.manifests.builders import SEED, by_kind, cpu_plan, seed_plan, validate_strict, workspace

NODE_DIR = "/opt/kaito/models/phi-4-mini-instruct"


def annotated(value: str, preset: str = "phi-4-mini-instruct") -> Any:
    metadata = {**SEED["metadata"], "annotations": {"kaito.sh/use-local-weights": value}}
    return workspace(metadata=metadata, inference={"preset": {"name": preset}})


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(objects, "StatefulSet")["spec"]["template"]["spec"])


def test_local_weights_mount_the_node_directory_read_only_and_serve_it() -> None:
    objects = render(annotated("true"), seed_plan())
    spec = pod_spec(objects)
    (container,) = spec["containers"]
    args = container["args"]
    assert args[args.index("--model") + 1] == NODE_DIR
    assert "microsoft/Phi-4-mini-instruct" not in args
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    assert {"name": "local-weights", "hostPath": {"path": NODE_DIR, "type": "Directory"}} in spec["volumes"]
    assert {"name": "local-weights", "mountPath": NODE_DIR, "readOnly": True} in container["volumeMounts"]
    for obj in objects:
        validate_strict(obj)


@pytest.mark.parametrize("value", ["false", None])
def test_without_the_opt_in_nothing_changes(value: str | None) -> None:
    plain = render(workspace(), seed_plan())
    objects = render(annotated(value) if value else workspace(), seed_plan())
    assert pod_spec(objects) == pod_spec(plain)
    (container,) = pod_spec(objects)["containers"]
    assert "microsoft/Phi-4-mini-instruct" in container["args"]


def test_cpu_presets_keep_the_model_their_image_ships() -> None:
    objects = render(annotated("true", "smollm2-135m-instruct"), cpu_plan())
    (container,) = pod_spec(objects)["containers"]
    assert all(v.get("name") != "local-weights" for v in pod_spec(objects)["volumes"])
    assert all(e["name"] != "HF_HUB_OFFLINE" for e in container.get("env", []))


@pytest.mark.parametrize("value", ["yes", "on", "1"])
def test_the_annotation_is_true_or_false(value: str) -> None:
    errors = validate(annotated(value))
    assert [str(e) for e in errors if "use-local-weights" in e.path] == [
        f'metadata.annotations["kaito.sh/use-local-weights"]: {value!r} is not valid: a switch; '
        "use 'true' or 'false', or remove the annotation"
    ]


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_any_case_of_true_opts_in(value: str) -> None:
    assert [e for e in validate(annotated(value)) if "use-local-weights" in e.path] == []
    (container,) = pod_spec(render(annotated(value), seed_plan()))["containers"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
