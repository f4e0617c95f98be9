"""Every example Workspace renders to objects that pass kubernetes-validate --strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pykaito.api.loading import load_path
from pykaito.manifests.documents import render_documents
from tests.manifests.builders import check_structure, validate_strict

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

# Bring-your-own nodes for examples without an instance type: one H100 node labelled to match.
BYO_NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "gpu-node-1",
        "labels": {
            "apps": "phi-4-byo",
            "kubernetes.io/os": "linux",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.memory": "81559",
        },
    },
    "status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}},
}


def test_the_examples_are_there() -> None:
    names = {p.name for p in EXAMPLES}
    assert len(names) >= 5, f"expected the example Workspaces in examples/, found {sorted(names)}"


def render_example(path: Path) -> list[dict[str, Any]]:
    docs = load_path(path)
    assert docs.workspaces, f"{path.name} holds no Workspace"
    rendered = render_documents(docs, nodes=[BYO_NODE], include_nodeclaims=True)
    assert rendered.notes == ()
    return list(rendered.objects)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_renders_valid_kubernetes_objects(path: Path) -> None:
    objects = render_example(path)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("StatefulSet") == len(load_path(path).workspaces)
    for obj in objects:
        if obj["kind"] == "NodeClaim":
            check_structure(obj)  # a custom resource: no schema in kubernetes-validate
        else:
            validate_strict(obj)
    text = yaml.safe_dump_all(objects, sort_keys=False)
    assert "&id" not in text  # no shared sub-objects, so no YAML anchors
    assert text == yaml.safe_dump_all(render_example(path), sort_keys=False)


def test_configmap_example_feeds_the_command_line_and_the_config_hash() -> None:
    path = next(p for p in EXAMPLES if "configmap" in p.name)
    sts = next(o for o in render_example(path) if o["kind"] == "StatefulSet")
    template = sts["spec"]["template"]
    args = template["spec"]["containers"][0]["args"]
    config = yaml.safe_load(next(iter(load_path(path).config_maps().values()))["inference_config.yaml"])
    for key, value in config["vllm"].items():
        assert args[args.index(f"--{key}") + 1] == str(value)
    assert "kaito.sh/config-hash" in template["metadata"]["annotations"]
    assert {"name": "config", "mountPath": "/mnt/config", "readOnly": True} in template["spec"]["containers"][
        0
    ]["volumeMounts"]


def test_cpu_example_needs_no_gpu_and_no_provisioning() -> None:
    path = next(p for p in EXAMPLES if "cpu" in p.name)
    objects = render_example(path)
    assert [o["kind"] for o in objects] == ["Service", "Service", "StatefulSet"]
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(objects)
