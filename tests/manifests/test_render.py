"""render(): the StatefulSet and Services of a Workspace, as upstream KAITO lays them out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from pykaito.errors import PlanError
from pykaito.manifests import ANNOTATION_CONFIG_HASH, ANNOTATION_REVISION, Images, render
from pykaito.planner.engine_args import to_argv
from tests.manifests.builders import (
    CPU_ARGS,
    SEED_ARGS,
    by_kind,
    cpu_plan,
    llama70_plan,
    seed_plan,
    validate_strict,
    workspace,
)

OWNER = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "name": "workspace-phi-4-mini",
    "uid": "0d7c3a6e-1111-4c2b-9e5f-0123",
    "controller": True,
    "blockOwnerDeletion": True,
}


def inference_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    statefulset = by_kind(objects, "StatefulSet")
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    # named after the Workspace, as upstream: `kubectl logs <pod> -c <workspace>` works
    assert [c["name"] for c in containers] == [statefulset["metadata"]["name"]]
    return dict(containers[0])


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(objects, "StatefulSet")["spec"]["template"]["spec"])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def test_seed_renders_services_then_statefulset_in_the_workspace_namespace() -> None:
    objects = render(workspace(), seed_plan())
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Service", "workspace-phi-4-mini"),
        ("Service", "workspace-phi-4-mini-headless"),
        ("StatefulSet", "workspace-phi-4-mini"),
    ]
    for obj in objects:
        assert obj["metadata"]["namespace"] == "default"
        assert obj["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-phi-4-mini"
        assert obj["metadata"]["ownerReferences"] == [OWNER]


def test_seed_statefulset_shape() -> None:
    sts = by_kind(render(workspace(), seed_plan()), "StatefulSet")
    assert sts["apiVersion"] == "apps/v1"
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "workspace-phi-4-mini-headless"
    assert spec["selector"] == {"matchLabels": {"kaito.sh/workspace": "workspace-phi-4-mini"}}
    assert spec["template"]["metadata"]["labels"] == {"kaito.sh/workspace": "workspace-phi-4-mini"}


def test_seed_container_runs_the_planned_vllm_command_on_port_5000() -> None:
    container = inference_container(render(workspace(), seed_plan()))
    assert container["image"] == Images().vllm
    assert container["command"] == ["pykaito-runtime"]
    assert container["args"] == ["vllm", *to_argv(SEED_ARGS), "--host", "0.0.0.0"]
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    gpu = {"nvidia.com/gpu": "1"}
    assert container["resources"] == {"requests": gpu, "limits": gpu}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False}


def test_seed_probes_get_health_on_5000_and_startup_waits_for_the_weights() -> None:
    container = inference_container(render(workspace(), seed_plan()))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 5000, "scheme": "HTTP"}
    startup = container["startupProbe"]
    # 600 s base + 20 s per GiB of weights (7.29 GiB), checked every 10 s
    assert startup["periodSeconds"] == 10
    assert startup["failureThreshold"] == 75
    assert container["livenessProbe"]["failureThreshold"] == 3
    # no shorter than upstream's: liveness from 30 s, readiness every 10 s
    assert container["livenessProbe"]["initialDelaySeconds"] >= 30
    assert container["readinessProbe"]["periodSeconds"] >= 10


@pytest.mark.parametrize(
    ("small", "large"),
    [
        pytest.param(1.0, 2.0, id="1-vs-2-GiB"),
        pytest.param(7.29, 67.0, id="phi-vs-llama-share"),
        pytest.param(100.0, 650.0, id="huge"),
    ],
)
def test_bigger_models_get_a_longer_startup(small: float, large: float) -> None:
    def threshold(weights: float) -> int:
        memory = dataclasses.replace(seed_plan().memory, weights_gib=weights)
        container = inference_container(render(workspace(), seed_plan(memory=memory)))
        return int(container["startupProbe"]["failureThreshold"])

    assert threshold(large) > threshold(small)


def test_seed_volumes_tolerations_and_affinity() -> None:
    objects = render(workspace(), seed_plan())
    spec = pod_spec(objects)
    assert spec["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "weights", "emptyDir": {"sizeLimit": "88Gi"}},
    ]
    assert inference_container(objects)["volumeMounts"] == [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "weights", "mountPath": "/workspace/weights"},
    ]
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {
            "key": "kubernetes.azure.com/scalesetpriority",
            "operator": "Equal",
            "value": "spot",
            "effect": "NoSchedule",
        },
    ]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["phi-4-h100"]}]}
        ]
    }
    assert spec["automountServiceAccountToken"] is False
    assert "securityContext" not in spec  # the vLLM image runs as root: not forced to non-root


def test_match_expressions_join_match_labels_in_the_affinity() -> None:
    resource = {
        "instanceType": "Standard_NC40ads_H100_v5",
        "labelSelector": {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["eu-1", "eu-2"]},
                {"key": "spot", "operator": "DoesNotExist"},
            ],
        },
    }
    spec = pod_spec(render(workspace(resource=resource), seed_plan()))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "a", "operator": "In", "values": ["1"]},
        {"key": "b", "operator": "In", "values": ["2"]},
        {"key": "zone", "operator": "In", "values": ["eu-1", "eu-2"]},
        {"key": "spot", "operator": "DoesNotExist"},
    ]


def test_no_label_selector_means_no_required_affinity_only_the_provisioned_nodes_preferred() -> None:
    spec = pod_spec(render(workspace(resource={"instanceType": "Standard_NC40ads_H100_v5"}), seed_plan()))
    affinity = spec["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity
    [preferred] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    expression = {"key": "kaito.sh/workspace", "operator": "In", "values": ["workspace-phi-4-mini"]}
    assert preferred == {"weight": 100, "preference": {"matchExpressions": [expression]}}


def test_seed_services() -> None:
    objects = render(workspace(), seed_plan())
    svc = by_kind(objects, "Service", "workspace-phi-4-mini")
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": {"kaito.sh/workspace": "workspace-phi-4-mini"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"},
            {"name": "ray", "port": 6379, "targetPort": 6379, "protocol": "TCP"},
            {"name": "dashboard", "port": 8265, "targetPort": 8265, "protocol": "TCP"},
        ],
        "publishNotReadyAddresses": True,
    }
    headless = by_kind(objects, "Service", "workspace-phi-4-mini-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == {"kaito.sh/workspace": "workspace-phi-4-mini"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("True", "LoadBalancer", id="True"),
        pytest.param("true", "LoadBalancer", id="lower-case"),
        pytest.param("False", "ClusterIP", id="False"),
        pytest.param("", "ClusterIP", id="empty"),
    ],
)
def test_enablelb_annotation_selects_the_service_type(value: str, expected: str) -> None:
    meta = {"name": "workspace-phi-4-mini", "annotations": {"kaito.sh/enablelb": value}}
    svc = by_kind(render(workspace(metadata=meta), seed_plan()), "Service", "workspace-phi-4-mini")
    assert svc["spec"]["type"] == expected


def test_without_a_uid_there_is_no_owner_reference() -> None:
    # rendered from a file, before the API server gave the Workspace a uid
    objects = render(workspace(metadata={"name": "workspace-phi-4-mini"}), seed_plan())
    assert all("ownerReferences" not in o["metadata"] for o in objects)
    for obj in objects:
        validate_strict(obj)


def revision_of(objects: list[dict[str, Any]]) -> str:
    return str(by_kind(objects, "StatefulSet")["metadata"]["annotations"][ANNOTATION_REVISION])


def test_revision_is_stable_for_the_same_inputs() -> None:
    first = revision_of(render(workspace(), seed_plan()))
    assert len(first) == 64 and int(first, 16) >= 0
    assert revision_of(render(workspace(), seed_plan())) == first
    reworded = seed_plan(explanation=("the same plan, explained in other words",))
    assert revision_of(render(workspace(), reworded)) == first


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"max_model_len": 4096}, id="max-model-len"),
        pytest.param({"engine_args": (*SEED_ARGS, ("--enable-prefix-caching", None))}, id="engine-args"),
        pytest.param({"gpus_per_node": 2, "tensor_parallel": 2}, id="gpus"),
        pytest.param({"kv_cache_tokens": 1000}, id="kv-tokens-plan-only"),
    ],
)
def test_revision_changes_when_the_plan_changes(change: dict[str, Any]) -> None:
    before = revision_of(render(workspace(), seed_plan()))
    assert revision_of(render(workspace(), seed_plan(**change))) != before


def test_revision_changes_with_the_image_and_the_config_data() -> None:
    base = revision_of(render(workspace(), seed_plan()))
    other_image = Images(vllm="registry.example/vllm:2")
    assert revision_of(render(workspace(), seed_plan(), images=other_image)) != base
    one = render(workspace(), seed_plan(), config_data={"inference_config.yaml": "vllm:\n  a: 1\n"})
    two = render(workspace(), seed_plan(), config_data={"inference_config.yaml": "vllm:\n  a: 2\n"})
    assert revision_of(one) not in (base, revision_of(two))
    hashes = {
        by_kind(objs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
        for objs in (one, two)
    }
    assert len(hashes) == 2


def test_rendering_twice_gives_identical_yaml_and_leaves_inputs_alone() -> None:
    ws, plan = workspace(), seed_plan()
    before = ws.model_dump()
    first = yaml.safe_dump_all(render(ws, plan), sort_keys=False)
    second = yaml.safe_dump_all(render(ws, plan), sort_keys=False)
    assert first == second
    assert ws.model_dump() == before


def test_configmap_is_mounted_at_mnt_config() -> None:
    inference = {"preset": {"name": "phi-4-mini-instruct"}, "config": "my-inference-params"}
    objects = render(workspace(inference=inference), seed_plan())
    assert {"name": "config", "configMap": {"name": "my-inference-params"}} in pod_spec(objects)["volumes"]
    mounts = inference_container(objects)["volumeMounts"]
    assert {"name": "config", "mountPath": "/mnt/config", "readOnly": True} in mounts


def test_adapters_are_mounted_under_mnt_adapter_and_loaded_by_vllm() -> None:
    inference = {
        "preset": {"name": "phi-4-mini-instruct"},
        "adapters": [
            {
                "source": {
                    "name": "falcon-lora",
                    "image": "myreg.io/falcon-lora:1",
                    "imagePullSecrets": ["regcred"],
                },
                "strength": "0.5",
            },
            {
                "source": {
                    "name": "from-pvc",
                    "volumeSource": {"persistentVolumeClaim": {"claimName": "loras"}},
                }
            },
            {"source": {"name": "from-urls", "urls": ["https://example.com/a/adapter_config.json"]}},
        ],
    }
    objects = render(workspace(inference=inference), seed_plan())
    spec = pod_spec(objects)
    container = inference_container(objects)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for name in ("falcon-lora", "from-pvc", "from-urls"):
        assert mounts[f"/mnt/adapter/{name}"] == f"adapter-{name}"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["adapter-from-pvc"] == {
        "name": "adapter-from-pvc",
        "persistentVolumeClaim": {"claimName": "loras"},
    }
    assert volumes["adapter-falcon-lora"]["emptyDir"] == {}
    inits = {c["name"]: c for c in spec["initContainers"]}
    assert sorted(inits) == ["adapter-falcon-lora", "adapter-from-urls"]
    assert inits["adapter-falcon-lora"]["image"] == "myreg.io/falcon-lora:1"
    assert inits["adapter-falcon-lora"]["command"][-1] == "cp -r /data/. /mnt/adapter/falcon-lora/"
    assert inits["adapter-from-urls"]["command"][-2:] == [
        "/mnt/adapter/from-urls",
        "https://example.com/a/adapter_config.json",
    ]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    args = container["args"]
    at = args.index("--lora-modules")
    assert "--enable-lora" in args
    assert args[at + 1 : at + 4] == [
        "falcon-lora=/mnt/adapter/falcon-lora",
        "from-pvc=/mnt/adapter/from-pvc",
        "from-urls=/mnt/adapter/from-urls",
    ]
    for obj in objects:
        validate_strict(obj)


def test_secrets_are_referenced_never_copied() -> None:
    meta = {"name": "workspace-phi-4-mini", "annotations": {"kaito.sh/api-key-secret": "phi-api-key"}}
    inference = {
        "preset": {"name": "phi-4-mini-instruct", "presetOptions": {"modelAccessSecret": "hf-token"}},
    }
    container = inference_container(render(workspace(metadata=meta, inference=inference), seed_plan()))
    env = env_of(container)
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}},
    }
    assert env["KAITO_API_KEY"] == {
        "name": "KAITO_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "phi-api-key", "key": "KAITO_API_KEY"}},
    }
    assert "VLLM_API_KEY" not in env  # one check, in the runtime's middleware


def test_no_secrets_named_means_no_secret_env() -> None:
    env = env_of(inference_container(render(workspace(), seed_plan())))
    assert not {"HF_TOKEN", "KAITO_API_KEY", "VLLM_API_KEY"} & set(env)


def test_images_can_be_overridden() -> None:
    images = Images().with_overrides(
        {"vllm": "registry.example/vllm:9", "llamacpp": "registry.example/cpu:9"}
    )
    assert images.cpu == "registry.example/cpu:9"
    assert (
        inference_container(render(workspace(), seed_plan(), images=images))["image"]
        == "registry.example/vllm:9"
    )


def test_transformers_runtime_runs_its_own_subcommand() -> None:
    plan = seed_plan(
        runtime="transformers", engine_args=(("--force-model", "microsoft/Phi-4-mini-instruct"),)
    )
    container = inference_container(render(workspace(), plan))
    assert container["args"] == [
        "transformers",
        "--force-model",
        "microsoft/Phi-4-mini-instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "5000",
    ]
    assert container["image"] == Images().transformers


def test_cpu_preset_renders_a_cpu_only_non_root_pod() -> None:
    inference = {"preset": {"name": "smollm2-135m-instruct"}}
    ws = workspace(metadata={"name": "workspace-smollm2"}, resource={}, inference=inference)
    objects = render(ws, cpu_plan())
    text = yaml.safe_dump_all(objects)
    assert "nvidia.com/gpu" not in text
    spec = pod_spec(objects)
    assert "tolerations" not in spec and "affinity" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    container = inference_container(objects)
    assert container["image"] == Images().cpu
    assert container["args"] == ["llamacpp", *to_argv(CPU_ARGS), "--host", "0.0.0.0"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2176Mi"}
    assert container["resources"]["limits"] == {"memory": "4352Mi"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert env_of(container)["HOME"]["value"] == "/tmp"
    assert container["startupProbe"]["failureThreshold"] == 13
    for obj in objects:
        validate_strict(obj)


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(seed_plan(runtime="transformers", node_count=2), id="transformers-two-nodes"),
        pytest.param(seed_plan(runtime="llamacpp", node_count=2), id="llamacpp-two-nodes"),
        pytest.param(seed_plan(gpus_per_node=0), id="vllm-without-gpus"),
        pytest.param(seed_plan(node_count=0), id="no-nodes"),
        pytest.param(seed_plan(runtime="tgi"), id="unknown-runtime"),
    ],
)
def test_plans_no_pod_can_run_are_refused(plan: Any) -> None:
    with pytest.raises(PlanError, match="workspace-phi-4-mini"):
        render(workspace(), plan)


@pytest.mark.parametrize(
    ("ws", "plan"),
    [
        pytest.param(workspace(), seed_plan(), id="seed"),
        pytest.param(
            workspace(
                metadata={"name": "workspace-phi-4-mini", "annotations": {"kaito.sh/enablelb": "True"}}
            ),
            seed_plan(),
            id="load-balancer",
        ),
        pytest.param(
            workspace(
                metadata={"name": "workspace-llama-3-3-70b"},
                inference={"preset": {"name": "llama-3.3-70b-instruct"}},
            ),
            llama70_plan(),
            id="multi-node",
        ),
    ],
)
def test_rendered_objects_pass_strict_schema_validation(ws: Any, plan: Any) -> None:
    for obj in render(ws, plan, config_data={"inference_config.yaml": "vllm: {}\n"}):
        validate_strict(obj)


def test_preferred_nodes_become_a_host_name_preference() -> None:
    resource = {
        "labelSelector": {"matchLabels": {"apps": "phi-4-byo"}},
        "preferredNodes": ["gpu-node-1", "gpu-node-2"],
    }
    affinity = pod_spec(render(workspace(resource=resource), seed_plan(instance_type="")))["affinity"]
    assert affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/hostname",
                        "operator": "In",
                        "values": ["gpu-node-1", "gpu-node-2"],
                    }
                ]
            },
        }
    ]
