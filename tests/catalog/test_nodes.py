"""Bring-your-own nodes described from their labels, and label-selector matching."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.catalog.loader import load_catalog
from pykaito.catalog.nodes import (
    DEFAULT_BANDWIDTH_GBS,
    describe_node,
    describe_node_labels,
    gpu_product_figures,
    node_matches,
)

GPU = "nvidia.com/gpu."


@pytest.mark.parametrize(
    ("labels", "count", "model", "memory_gib", "bandwidth"),
    [
        pytest.param(
            {GPU + "product": "NVIDIA-A100-SXM4-80GB", GPU + "count": "8", GPU + "memory": "81920"},
            8,
            "NVIDIA-A100-SXM4-80GB",
            640.0,
            2039,
            id="a100-80-sxm",
        ),
        pytest.param(
            {GPU + "product": "NVIDIA-H100-80GB-HBM3", GPU + "count": "1", GPU + "memory": "81559"},
            1,
            "NVIDIA-H100-80GB-HBM3",
            79.65,
            3350,
            id="h100-hbm3",
        ),
        pytest.param(
            {GPU + "product": "NVIDIA-L4", GPU + "count": "2", GPU + "memory": "23034"},
            2,
            "NVIDIA-L4",
            44.99,
            300,
            id="l4",
        ),
        pytest.param(
            {GPU + "product": "NVIDIA-A10", GPU + "count": "1", GPU + "memory": "23028"},
            1,
            "NVIDIA-A10",
            22.49,
            600,
            id="a10",
        ),
        pytest.param(
            {GPU + "product": "NVIDIA-A10G", GPU + "count": "4"},
            4,
            "NVIDIA-A10G",
            96.0,
            600,
            id="a10g-no-memory-label",
        ),
        pytest.param(
            {GPU + "product": "Some-Future-GPU", GPU + "count": "1"},
            1,
            "Some-Future-GPU",
            0.0,
            DEFAULT_BANDWIDTH_GBS,
            id="unknown-product",
        ),
        pytest.param({GPU + "product": "NVIDIA-L40S"}, 1, "NVIDIA-L40S", 48.0, 864, id="product-only"),
    ],
)
def test_describe_gpu_node(
    labels: dict[str, str], count: int, model: str, memory_gib: float, bandwidth: float
) -> None:
    t = describe_node_labels(labels, name="gpu-1")
    assert (t.name, t.cloud, t.gpu_count, t.gpu_model) == ("gpu-1", "node", count, model)
    assert t.gpu_memory_gib == pytest.approx(memory_gib, abs=0.01)
    assert t.memory_bandwidth_gbs == bandwidth
    assert t.has_gpu


def test_a10_keeps_the_lower_memory_utilisation() -> None:
    assert describe_node_labels({GPU + "product": "NVIDIA-A10"}).gpu_memory_utilization == 0.82
    assert describe_node_labels({GPU + "product": "NVIDIA-L4"}).gpu_memory_utilization == 0.84


def test_node_without_gpu_labels_is_cpu_only() -> None:
    t = describe_node_labels({"kubernetes.io/os": "linux"}, name="cpu-1")
    assert not t.has_gpu and t.gpu_count == 0 and t.gpu_memory_gib == 0.0
    assert t.name == "cpu-1"


def test_catalog_instance_type_label_wins() -> None:
    catalog = load_catalog()
    labels = {"node.kubernetes.io/instance-type": "Standard_NC40ads_H100_v5", GPU + "product": "x"}
    assert describe_node_labels(labels, catalog=catalog) == catalog.instance_type("Standard_NC40ads_H100_v5")
    unknown = {"node.kubernetes.io/instance-type": "my-box", GPU + "product": "NVIDIA-L4", GPU + "count": "1"}
    t = describe_node_labels(unknown, catalog=catalog)
    assert (t.name, t.cloud, t.gpu_model) == ("my-box", "node", "NVIDIA-L4")


def test_describe_raw_node_uses_gpu_capacity_when_count_label_missing() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "labels": {GPU + "product": "NVIDIA-H100-80GB-HBM3", GPU + "memory": "81920"},
        },
        "status": {"capacity": {"nvidia.com/gpu": "2", "cpu": "32"}},
    }
    t = describe_node(node)
    assert (t.name, t.gpu_count, t.gpu_memory_gib) == ("n1", 2, 160.0)


def test_unparseable_count_falls_back() -> None:
    t = describe_node_labels({GPU + "product": "NVIDIA-L4", GPU + "count": "many"})
    assert t.gpu_count == 1


@pytest.mark.parametrize(
    ("product", "bandwidth"),
    [
        pytest.param("NVIDIA-A100-SXM4-40GB", 1555, id="a100-40"),
        pytest.param("NVIDIA-H100-NVL", 3900, id="h100-nvl"),
        pytest.param("NVIDIA H200", 4800, id="h200-spaces"),
        pytest.param("Tesla-T4", 320, id="t4"),
    ],
)
def test_product_table(product: str, bandwidth: float) -> None:
    assert gpu_product_figures(product)[0] == bandwidth


LABELS = {"apps": "phi", "zone": "a", "gpu": "yes"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        pytest.param({}, True, id="empty-matches-all"),
        pytest.param(None, False, id="none-matches-nothing"),
        pytest.param({"matchLabels": {"apps": "phi"}}, True, id="labels"),
        pytest.param({"matchLabels": {"apps": "phi", "zone": "b"}}, False, id="labels-one-differs"),
        pytest.param({"matchLabels": {"missing": "x"}}, False, id="labels-missing"),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, True, id="in"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}, False, id="in-miss"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]}, True, id="notin"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            False,
            id="notin-miss",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "other", "operator": "NotIn", "values": ["a"]}]},
            True,
            id="notin-absent",
        ),
        pytest.param({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, True, id="exists"),
        pytest.param({"matchExpressions": [{"key": "cpu", "operator": "Exists"}]}, False, id="exists-miss"),
        pytest.param(
            {"matchExpressions": [{"key": "cpu", "operator": "DoesNotExist"}]}, True, id="does-not-exist"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]},
            False,
            id="does-not-exist-miss",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["1"]}]}, False, id="unknown-op"
        ),
        pytest.param(
            {
                "matchLabels": {"apps": "phi"},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}],
            },
            False,
            id="both-must-hold",
        ),
    ],
)
def test_node_matches(selector: dict[str, Any] | None, matches: bool) -> None:
    assert node_matches(selector, LABELS) is matches
