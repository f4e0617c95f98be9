"""Every Workspace of upstream KAITO's examples/inference/ (arc-examples/ included) validates,
plans and renders unchanged.

The YAML under examples/upstream/ is our own, written from upstream's files (placeholders filled
in: the Arc examples run on a labelled node of your own, as Arc clusters have no provisioner).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pykaito.api.loading import Documents, load_path, load_text
from pykaito.api.validation import ValidationContext, validate
from pykaito.cli.api_cmds import offline_context
from pykaito.manifests.documents import inference_config, render_documents
from pykaito.planner import Plan, plan
from pykaito.planner.engine_args import to_argv
from tests.manifests.builders import check_structure, validate_strict

UPSTREAM = Path(__file__).parents[2] / "examples" / "upstream"
EXAMPLES = sorted(UPSTREAM.glob("*.yaml"))
UPSTREAM_WORKSPACE_FILES = 41  # 30 in examples/inference/, 11 in examples/inference/arc-examples/


def gpu_node(name: str, app: str, product: str, count: int, memory_mib: int) -> dict[str, Any]:
    labels = {
        "apps": app,
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory_mib),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"capacity": {"nvidia.com/gpu": str(count)}, "allocatable": {"nvidia.com/gpu": str(count)}},
    }


# Nodes of your own for the examples without an instance type.
NODES = [
    gpu_node("arc-node-1", "llm-inference", "NVIDIA-A100-SXM4-80GB", 1, 81920),
    gpu_node("gpu-4x-a100", "accelerator-llama-3-1-8b-instruct", "NVIDIA-A100-SXM4-80GB", 4, 81920),
    gpu_node("mig-h100-nvl", "phi-4-mini-mig", "NVIDIA-H100-NVL", 1, 95830),
]


def load(name: str) -> Documents:
    return load_path(UPSTREAM / name)


def plan_of(docs: Documents) -> Plan:
    [workspace] = docs.workspaces
    own = not (workspace.resource and workspace.resource.instanceType)
    config, _ = inference_config(workspace, docs.config_maps(workspace.namespace), docs.source)
    return plan(workspace, nodes=NODES if own else None, config=config)


def rendered(docs: Documents) -> list[dict[str, Any]]:
    result = render_documents(docs, nodes=NODES, include_nodeclaims=True)
    assert result.notes == ()
    return list(result.objects)


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_every_upstream_workspace_example_has_a_case() -> None:
    written_from = [p for p in EXAMPLES if p.read_text().startswith("# Written from upstream KAITO's")]
    arc = [p for p in written_from if p.name.startswith("arc-")]
    ours = {"mig-phi-4-mini.yaml"}  # from the MIG InferenceSet example's template
    assert len([p for p in written_from if p.name not in ours]) == UPSTREAM_WORKSPACE_FILES
    assert len(arc) == 11


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_upstream_example_validates_plans_and_renders(path: Path) -> None:
    docs = load_path(path)
    [workspace] = docs.workspaces
    context, notes = offline_context(workspace, docs)
    assert notes == []  # every ConfigMap and Secret it names is in the file
    assert validate(workspace, context=replace(context, nodes=NODES)) == []
    result = plan_of(docs)
    assert result.total_gpus >= 1 and result.max_model_len >= 2048
    objects = rendered(docs)
    assert [o["kind"] for o in objects].count("StatefulSet") == 1
    for obj in objects:
        if obj["kind"] == "NodeClaim":
            check_structure(obj)
        else:
            validate_strict(obj)
    container = container_of(objects)
    assert container["name"] == workspace.name
    args = container["args"]
    served = args[args.index("--served-model-name") + 1 :]
    assert served[0] == workspace.preset_name  # the preset name first, then upstream's served name


def test_a_token_on_a_model_that_needs_none_is_accepted_and_the_plan_says_so() -> None:
    docs = load("gemma-3-4b-instruct.yaml")
    result = plan_of(docs)
    [note] = result.notes
    assert "google/gemma-3-4b-it downloads without a token" in note
    env = {e["name"]: e for e in container_of(rendered(docs))["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "HF_TOKEN",
        "optional": True,
    }


@pytest.mark.parametrize(
    ("name", "served"),
    [
        pytest.param("gemma-3-4b-instruct.yaml", ["gemma-3-4b-instruct", "gemma-3-4b-it"], id="gemma-3-4b"),
        pytest.param(
            "mistral-7b-instruct.yaml",
            ["mistral-7b-instruct", "mistral-7b-instruct-v0.3"],
            id="mistral-7b-instruct",
        ),
        pytest.param("mistral-7b.yaml", ["mistral-7b", "mistral-7b-v0.3"], id="mistral-7b"),
        pytest.param(
            "ministral-3-8b-instruct.yaml",
            ["ministral-3-8b-instruct", "ministral-3-8b-instruct-2512"],
            id="ministral-3-8b",
        ),
        pytest.param("phi-4-mini.yaml", ["phi-4-mini-instruct"], id="phi-4-mini-same-name"),
    ],
)
def test_the_model_answers_to_the_preset_name_and_upstreams_served_name(name: str, served: list[str]) -> None:
    argv = to_argv(plan_of(load(name)).engine_args)
    start = argv.index("--served-model-name") + 1
    assert argv[start : start + len(served)] == served
    assert argv[start + len(served)].startswith("--")


@pytest.mark.parametrize(
    ("name", "size", "context"),
    [
        pytest.param("ministral-3-3b-instruct.yaml", 4.35, 262144, id="ministral-3-3b"),
        pytest.param("ministral-3-8b-instruct.yaml", 9.70, 262144, id="ministral-3-8b"),
        pytest.param("ministral-3-14b-instruct.yaml", 14.65, 262144, id="ministral-3-14b"),
        pytest.param("mistral-7b.yaml", 13.50, 32768, id="mistral-7b"),
        pytest.param("mistral-large-3-675b-instruct.yaml", 634.70, 294912, id="mistral-large-3"),
    ],
)
def test_the_new_mistral_presets_carry_upstreams_figures_and_formats(
    name: str, size: float, context: int
) -> None:
    result = plan_of(load(name))
    argv = to_argv(result.engine_args)
    assert f"{size:g} GiB" in result.explanation[0] and str(context) in result.explanation[0]
    for flag in ("--load-format", "--config-format", "--tokenizer-mode"):
        assert argv[argv.index(flag) + 1] == "mistral"
    assert "--reasoning-parser" not in argv  # upstream passes none to Mistral models


def test_mistral_large_spreads_over_six_nodes_as_asked() -> None:
    result = plan_of(load("mistral-large-3-675b-instruct.yaml"))
    assert (result.node_count, result.gpus_per_node, result.notes) == (6, 2, ())
    assert to_argv(result.engine_args)[to_argv(result.engine_args).index("--dtype") + 1] == "auto"


def test_mig_slice_is_sized_requested_and_explained() -> None:
    docs = load("mig-phi-4-mini.yaml")
    result = plan_of(docs)
    assert result.gpu_resource == "nvidia.com/mig-2g.24gb" and result.gpus_per_node == 1
    assert 22.0 < result.memory.gpu_memory_gib < 23.0  # 24 GB is 22.4 GiB
    assert result.memory.usable_gib < result.memory.gpu_memory_gib
    assert any(
        "GPU partition (MIG): one 2g.24gb slice of an H100-94GB" in line for line in result.explanation
    )
    objects = rendered(docs)
    resources = container_of(objects)["resources"]
    assert resources == {
        "requests": {"nvidia.com/mig-2g.24gb": "1"},
        "limits": {"nvidia.com/mig-2g.24gb": "1"},
    }
    assert not [o for o in objects if o["kind"] == "NodeClaim"]


def test_mig_plans_without_node_information() -> None:
    docs = load("mig-phi-4-mini.yaml")
    [workspace] = docs.workspaces
    result = plan(workspace)
    assert result.gpu_resource == "nvidia.com/mig-2g.24gb"
    assert "MIG 2g.24gb" in result.gpu_model


def test_accelerator_partition_takes_some_whole_gpus_of_a_node() -> None:
    docs = load("accelerator.yaml")
    result = plan_of(docs)
    assert (result.gpus_per_node, result.gpu_resource) == (2, "nvidia.com/gpu")
    assert result.tensor_parallel * result.data_parallel == 2  # an 8B model: one copy per A100
    assert any("GPU partition (accelerator): 2 whole" in line for line in result.explanation)
    assert container_of(rendered(docs))["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_performance_mode_throughput_changes_the_engine_arguments_and_is_explained() -> None:
    result = plan_of(load("phi-4-mini-throughput.yaml"))
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--performance-mode") + 1] == "throughput"
    assert any(line.startswith("kaito.sh/performance-mode throughput:") for line in result.explanation)
    assert "--performance-mode" not in to_argv(plan_of(load("phi-4-mini.yaml")).engine_args)


def test_preset_image_and_pull_secrets_are_used_in_the_pod() -> None:
    raw = yaml.safe_load((UPSTREAM / "phi-4-mini.yaml").read_text())
    raw["inference"]["preset"]["presetOptions"] = {
        "image": "myregistry.azurecr.io/kaito/phi-4-mini:0.1.0",
        "imagePullSecrets": ["registry-pull", "registry-pull"],
    }
    docs = load_text(yaml.safe_dump(raw), "inline")
    objects = rendered(docs)
    container = container_of(objects)
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    assert container["image"] == "myregistry.azurecr.io/kaito/phi-4-mini:0.1.0"
    assert statefulset["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-pull"}]
    for obj in objects:
        if obj["kind"] != "NodeClaim":
            validate_strict(obj)


def test_validation_without_nodes_still_accepts_every_provisioned_example() -> None:
    for path in EXAMPLES:
        docs = load_path(path)
        [workspace] = docs.workspaces
        if workspace.resource and workspace.resource.instanceType:
            context, _ = offline_context(workspace, docs)
            assert validate(workspace, context=context) == [], path.name


def test_unknown_nodes_context_is_not_required_for_validation() -> None:
    docs = load("arc-phi-4-mini.yaml")
    [workspace] = docs.workspaces
    assert validate(workspace, context=ValidationContext()) == []


def test_use_local_weights_mounts_the_node_directory_and_serves_from_it() -> None:
    raw = yaml.safe_load((UPSTREAM / "phi-4-mini.yaml").read_text())
    raw["metadata"]["annotations"] = {"kaito.sh/use-local-weights": "true"}
    objects = rendered(load_text(yaml.safe_dump(raw), "inline"))
    container = container_of(objects)
    path = "/opt/kaito/models/phi-4-mini-instruct"
    assert container["args"][container["args"].index("--model") + 1] == path
    assert {"name": "local-weights", "mountPath": path, "readOnly": True} in container["volumeMounts"]
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert {"name": "local-weights", "hostPath": {"path": path, "type": "Directory"}} in volumes
    validate_strict(statefulset)


def test_node_class_name_annotation_picks_the_nodeclaims_node_class() -> None:
    raw = yaml.safe_load((UPSTREAM / "phi-4-mini.yaml").read_text())
    raw["metadata"]["annotations"] = {"kaito.sh/node-class-name": "gpu-ubuntu"}
    objects = rendered(load_text(yaml.safe_dump(raw), "inline"))
    [claim] = [o for o in objects if o["kind"] == "NodeClaim"]
    assert claim["spec"]["nodeClassRef"]["name"] == "gpu-ubuntu"
