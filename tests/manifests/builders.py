"""Workspaces and Plans for the manifest tests, built directly so the renderer is tested alone."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import kubernetes_validate

from pykaito.api.types import Workspace
from pykaito.planner.engine_args import Arg
from pykaito.planner.types import MemoryBreakdown, Plan

K8S_VERSIONS = ("1.30.0", "1.37.0")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SEED = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "workspace-phi-4-mini",
        "namespace": "default",
        "uid": "0d7c3a6e-1111-4c2b-9e5f-0123",
    },
    "resource": {
        "instanceType": "Standard_NC40ads_H100_v5",
        "labelSelector": {"matchLabels": {"apps": "phi-4-h100"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}

SEED_ARGS: tuple[Arg, ...] = (
    ("--model", "microsoft/Phi-4-mini-instruct"),
    ("--served-model-name", "phi-4-mini-instruct"),
    ("--download-dir", "/workspace/weights"),
    ("--dtype", "bfloat16"),
    ("--tensor-parallel-size", "1"),
    ("--max-model-len", "131072"),
    ("--gpu-memory-utilization", "0.84"),
    ("--trust-remote-code", None),
    ("--max-num-seqs", "256"),
    ("--port", "5000"),
)

LLAMA70_ARGS: tuple[Arg, ...] = (
    ("--model", "meta-llama/Llama-3.3-70B-Instruct"),
    ("--served-model-name", "llama-3.3-70b-instruct"),
    ("--download-dir", "/workspace/weights"),
    ("--dtype", "bfloat16"),
    ("--tensor-parallel-size", "1"),
    ("--pipeline-parallel-size", "2"),
    ("--distributed-executor-backend", "ray"),
    ("--max-model-len", "8192"),
    ("--gpu-memory-utilization", "0.84"),
    ("--port", "5000"),
)

CPU_ARGS: tuple[Arg, ...] = (
    ("--model", "embedded"),
    ("--served-model-name", "smollm2-135m-instruct"),
    ("--ctx-size", "65536"),
    ("--parallel", "8"),
    ("--max-model-len", "8192"),
    ("--port", "5000"),
)


def workspace(**changes: Any) -> Workspace:
    """The seed Workspace with top-level sections replaced (``metadata``, ``resource``, ...)."""
    data = {**SEED, **changes}
    return Workspace.model_validate(data)


def seed_plan(**changes: Any) -> Plan:
    plan = Plan(
        workspace="workspace-phi-4-mini",
        preset="phi-4-mini-instruct",
        model_id="microsoft/Phi-4-mini-instruct",
        runtime="vllm",
        instance_type="Standard_NC40ads_H100_v5",
        gpu_model="H100",
        gpus_per_node=1,
        node_count=1,
        tensor_parallel=1,
        pipeline_parallel=1,
        data_parallel=1,
        max_model_len=131072,
        gpu_memory_utilization=0.84,
        memory=MemoryBreakdown(
            gpu_memory_gib=94.0, usable_gib=78.96, weights_gib=7.29, kv_cache_gib=69.0, overhead_gib=2.66
        ),
        kv_cache_tokens=565000,
        concurrent_sequences=4.3,
        decode_tokens_per_s=480.0,
        engine_args=SEED_ARGS,
        explanation=("1 x H100 holds phi-4-mini-instruct with room for 565000 tokens of KV cache",),
        disk_gib=87.15,
    )
    return dataclasses.replace(plan, **changes)


def llama70_plan() -> Plan:
    return seed_plan(
        workspace="workspace-llama-3-3-70b",
        preset="llama-3.3-70b-instruct",
        model_id="meta-llama/Llama-3.3-70B-Instruct",
        instance_type="Standard_NC24ads_A100_v4",
        gpu_model="A100-80GB-PCIe",
        node_count=2,
        pipeline_parallel=2,
        max_model_len=8192,
        memory=MemoryBreakdown(
            gpu_memory_gib=80.0, usable_gib=67.2, weights_gib=67.03, kv_cache_gib=-2.0, overhead_gib=2.3
        ),
        engine_args=LLAMA70_ARGS,
        disk_gib=211.42,
    )


def cpu_plan() -> Plan:
    return seed_plan(
        workspace="workspace-smollm2",
        preset="smollm2-135m-instruct",
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        runtime="llamacpp",
        instance_type="",
        gpu_model="",
        gpus_per_node=0,
        max_model_len=8192,
        gpu_memory_utilization=0.0,
        memory=MemoryBreakdown(
            gpu_memory_gib=0.0, usable_gib=0.0, weights_gib=0.0913, kv_cache_gib=1.41, overhead_gib=0.1
        ),
        engine_args=CPU_ARGS,
        disk_gib=0.0,
    )


def by_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def validate_strict(obj: dict[str, Any]) -> None:
    """kubernetes-validate --strict against old and new API schemas (unknown fields fail)."""
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def check_structure(claim: dict[str, Any]) -> None:
    """NodeClaims are custom resources: check the shape karpenter.sh/v1 requires."""
    assert claim["apiVersion"] == "karpenter.sh/v1"
    assert claim["kind"] == "NodeClaim"
    assert set(claim) == {"apiVersion", "kind", "metadata", "spec"}
    assert "namespace" not in claim["metadata"]  # cluster-scoped
    assert DNS_1123_LABEL.match(claim["metadata"]["name"])
    spec = claim["spec"]
    assert set(spec) <= {"nodeClassRef", "taints", "requirements", "resources"}
    assert set(spec["nodeClassRef"]) == {"group", "kind", "name"}
    for requirement in spec["requirements"]:
        assert requirement["operator"] in {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
        assert all(isinstance(v, str) for v in requirement.get("values", []))
    for taint in spec.get("taints", []):
        assert taint["effect"] in {"NoSchedule", "PreferNoSchedule", "NoExecute"}
    assert re.fullmatch(r"\d+Gi", spec["resources"]["requests"]["storage"])
    for key, value in claim["metadata"]["labels"].items():
        assert isinstance(value, str) and len(value) <= 63, key
