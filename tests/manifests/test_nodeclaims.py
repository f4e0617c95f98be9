"""render_nodeclaims(): one karpenter.sh/v1 NodeClaim per planned node."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from pykaito.manifests import NodeClassRef, nodeclaim_name, render_nodeclaims
from pykaito.manifests.meta import dns_label
from tests.manifests.builders import (
    DNS_1123_LABEL,
    check_structure,
    cpu_plan,
    llama70_plan,
    seed_plan,
    workspace,
)


def test_seed_gets_one_gpu_nodeclaim() -> None:
    claims = render_nodeclaims(workspace(), seed_plan())
    assert len(claims) == 1
    claim = claims[0]
    check_structure(claim)
    assert claim["metadata"]["labels"] == {
        "apps": "phi-4-h100",
        "kaito.sh/workspace": "workspace-phi-4-mini",
        "kaito.sh/workspacenamespace": "default",
    }
    assert claim["spec"] == {
        "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"},
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "requirements": [
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": ["Standard_NC40ads_H100_v5"],
            },
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
        "resources": {"requests": {"storage": "88Gi"}},
    }


def test_one_claim_per_node_with_distinct_stable_names() -> None:
    ws = workspace(metadata={"name": "workspace-llama-3-3-70b"})
    claims = render_nodeclaims(ws, llama70_plan())
    assert len(claims) == 2
    names = [c["metadata"]["name"] for c in claims]
    assert names == [nodeclaim_name(ws, 0), nodeclaim_name(ws, 1)]
    assert len(set(names)) == 2
    assert names == [c["metadata"]["name"] for c in render_nodeclaims(ws, llama70_plan())]
    assert all(c["spec"]["resources"]["requests"]["storage"] == "212Gi" for c in claims)
    for claim in claims:
        check_structure(claim)


def test_the_same_name_in_another_namespace_gets_other_claims() -> None:
    here = nodeclaim_name(workspace(metadata={"name": "ws", "namespace": "a"}), 0)
    there = nodeclaim_name(workspace(metadata={"name": "ws", "namespace": "b"}), 0)
    assert here != there


def test_node_class_is_configurable() -> None:
    ref = NodeClassRef(group="karpenter.k8s.aws", kind="EC2NodeClass", name="gpu")
    claim = render_nodeclaims(workspace(), seed_plan(), node_class=ref)[0]
    assert claim["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "gpu",
    }


def test_kubernetes_own_labels_are_left_to_the_node() -> None:
    resource = {
        "instanceType": "Standard_NC40ads_H100_v5",
        "labelSelector": {
            "matchLabels": {"kubernetes.io/os": "linux", "team.example.com/gpu": "yes", "apps": "a"}
        },
    }
    labels = render_nodeclaims(workspace(resource=resource), seed_plan())[0]["metadata"]["labels"]
    assert labels == {
        "apps": "a",
        "team.example.com/gpu": "yes",
        "kaito.sh/workspace": "workspace-phi-4-mini",
        "kaito.sh/workspacenamespace": "default",
    }


def test_bring_your_own_nodes_need_no_claims() -> None:
    assert render_nodeclaims(workspace(), seed_plan(instance_type="")) == []


def test_cpu_nodes_are_not_tainted_for_gpus() -> None:
    claim = render_nodeclaims(workspace(), dataclasses.replace(cpu_plan(), instance_type="Standard_D4s_v5"))[
        0
    ]
    check_structure(claim)
    assert "taints" not in claim["spec"]
    assert claim["spec"]["requirements"][0]["values"] == ["Standard_D4s_v5"]


@given(
    namespace=st.from_regex(DNS_1123_LABEL, fullmatch=True).filter(lambda s: len(s) <= 63),
    name=st.from_regex(DNS_1123_LABEL, fullmatch=True).filter(lambda s: len(s) <= 63),
    index=st.integers(min_value=0, max_value=63),
)
def test_nodeclaim_names_are_always_dns_labels(namespace: str, name: str, index: int) -> None:
    claim_name = nodeclaim_name(workspace(metadata={"name": name, "namespace": namespace}), index)
    assert DNS_1123_LABEL.match(claim_name) and len(claim_name) <= 63


@given(prefix=st.sampled_from(["adapter", "x"]), name=st.text(min_size=1, max_size=120))
def test_dns_label_always_gives_a_valid_label(prefix: str, name: str) -> None:
    label = dns_label(prefix, name)
    assert DNS_1123_LABEL.match(label) and len(label) <= 63
