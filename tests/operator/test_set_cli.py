"""InferenceSets from the command line and with KEDA, against the emulator and the real operator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.cluster import condition, eventually, live, objects
from tests.operator.conftest import emulated_cluster
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.scale_subresource import INFERENCESETS
from tests.operator.test_cluster_cli import Kaito, Result, kaito  # noqa: F401 (the fixture)
from tests.operator.test_inferenceset import play_cluster

EXAMPLE = (
    Path(__file__).parents[1]
    / "api"
    / "data"
    / "upstream_inferencesets"
    / "kaito_inferenceset_phi_4_mini.yaml"
)
NAME = "phi-4-mini"
SCALEDOBJECTS = "keda.sh/v1alpha1/scaledobjects"


@pytest.fixture
def admin_kaito(kaito: Kaito, tmp_path: Path) -> Kaito:  # noqa: F811
    """``kaito`` as the test's admin: the operator's own kubeconfig is the environment's while it runs."""
    admin = str(tmp_path / "kubeconfig")  # written by the emulated cluster for the test itself

    async def run(*args: str) -> Result:
        return await kaito(*args, "--kubeconfig", admin)

    return run


@pytest.fixture
async def keda_kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeEmulator]:
    """The emulator under the rules of a chart installed with KEDA autoscaling on."""
    async with emulated_cluster(
        tmp_path, monkeypatch, "replicas=1", "inferenceSet.keda.enabled=true"
    ) as kube:
        yield kube


def the_set(kube: KubeEmulator) -> dict[str, Any] | None:
    return live(kube, INFERENCESETS, "default", NAME)


async def test_apply_get_scale_describe_wait_delete(
    kube: KubeEmulator, operator: Any, admin_kaito: Kaito
) -> None:
    result = await admin_kaito("apply", "-f", str(EXAMPLE))
    assert (result.code, result.out.strip()) == (0, f"inferenceset.kaito.sh/{NAME} created"), result.err

    async def ready() -> bool:
        await play_cluster(kube)
        return condition(the_set(kube), "InferenceSetReady").get("status") == "True"

    await eventually(ready, timeout=60)
    result = await admin_kaito("wait", f"is/{NAME}", "--timeout", "30s")
    assert result.code == 0 and f"inferenceset {NAME} is ready" in result.out, result.err
    result = await admin_kaito("wait", f"is/{NAME}", "--timeout", "30s", "-o", "json")
    assert result.code == 0 and json.loads(result.out)["outcome"] == "ready", result.err
    result = await admin_kaito("get", "is")
    header, line = result.out.strip().splitlines()
    assert header.split() == ["NAME", "REPLICAS", "READYREPLICAS", "READY", "AGE"]
    assert line.split()[:4] == [NAME, "1", "1", "True"]

    result = await admin_kaito("scale", f"is/{NAME}", "--replicas", "0")
    assert (result.code, result.out.strip()) == (0, f"inferenceset.kaito.sh/{NAME} scaled to 0 (had 1)"), (
        result.err
    )
    await eventually(lambda: condition(the_set(kube), "ScaledToZero").get("status") == "True", timeout=30)
    result = await admin_kaito("describe", f"is/{NAME}")
    assert result.code == 0, result.err
    assert "ScaledToZero" in result.out and f"kaito scale {NAME} --replicas N" in result.out
    assert "auto-provision=true" in result.out and "threshold=10" in result.out
    result = await admin_kaito("wait", f"is/{NAME}", "--timeout", "1s")
    assert result.code == 2 and "scaled to zero" in result.err
    result = await admin_kaito("connect", f"is/{NAME}")
    assert result.code == 2 and "has no ready replica" in result.err

    result = await admin_kaito("delete", f"is/{NAME}")
    assert result.code == 0 and f'inferenceset.kaito.sh "{NAME}" deleted' in result.out
    await eventually(lambda: the_set(kube) is None, timeout=30)
    result = await admin_kaito("get", "is/nothing")
    assert result.code == 2 and "inferenceset 'nothing' not found" in result.err


async def test_annotations_make_a_scaled_object_capped_by_the_node_limit(
    keda_kube: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    admin_kaito: Kaito,
) -> None:
    from tests.operator.conftest import running_operator

    keda_kube.declare(SCALEDOBJECTS, "ScaledObject", subresources=set())
    monkeypatch.setenv("KAITO_OPERATOR_EXTERNAL_SCALER_ADDRESS", "pykaito-scaler.kaito-system.svc:9090")
    async with running_operator(keda_kube):
        result = await admin_kaito("apply", "-f", str(EXAMPLE))
        assert result.code == 0, result.err
        scaled = await eventually(lambda: live(keda_kube, SCALEDOBJECTS, "default", NAME), timeout=30)
        assert scaled["spec"]["scaleTargetRef"]["kind"] == "InferenceSet"
        assert scaled["spec"]["maxReplicaCount"] == 5  # nodeCountLimit 5, one node per replica
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["type"] == "external" and trigger["metadata"]["threshold"] == "10"
        verdict = await eventually(lambda: condition(the_set(keda_kube), "AutoscalingReady"), timeout=30)
        assert verdict["status"] == "True" and "replicas 1..5" in verdict["message"]

        await admin_kaito("delete", f"is/{NAME}")
        await eventually(lambda: the_set(keda_kube) is None, timeout=30)
        assert objects(keda_kube, SCALEDOBJECTS) == []


async def test_without_keda_installed_the_condition_says_so(
    keda_kube: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    admin_kaito: Kaito,
) -> None:
    from tests.operator.conftest import running_operator

    monkeypatch.setenv("KAITO_OPERATOR_EXTERNAL_SCALER_ADDRESS", "pykaito-scaler.kaito-system.svc:9090")
    async with running_operator(keda_kube):
        assert (await admin_kaito("apply", "-f", str(EXAMPLE))).code == 0
        verdict = await eventually(lambda: condition(the_set(keda_kube), "AutoscalingReady"), timeout=30)
        assert (
            verdict["status"] == "False"
            and verdict["reason"] == "CRDMissing"
            and "KEDA" in verdict["message"]
        )
