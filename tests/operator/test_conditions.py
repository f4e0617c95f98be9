"""Pure functions of the operator: status from what the cluster reports, drift, settings."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.api.types import ConditionType, State
from pykaito.errors import InputError
from pykaito.operator.children import condition_for, contains, drifted
from pykaito.operator.conditions import (
    Observed,
    Reason,
    conditions_from,
    merge_conditions,
    pod_failure,
    state_of,
)
from pykaito.operator.settings import settings_from_env


def pod(ready: bool = True, containers: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    conds += status.pop("conditions", [])
    return {
        "metadata": {"name": "ws-0"},
        "status": {"conditions": conds, "containerStatuses": containers or [], **status},
    }


def waiting(reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "inference",
        "ready": False,
        "state": {"waiting": {"reason": reason, "message": "m"}},
        **extra,
    }


NODE = {
    "metadata": {"name": "n1"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
}
CLAIM = {
    "metadata": {"name": "c1"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeName": "n1"},
}
STS = {"metadata": {"name": "ws"}, "spec": {"replicas": 1}}


@pytest.mark.parametrize(
    ("the_pod", "reason"),
    [
        pytest.param(pod(), None, id="healthy"),
        pytest.param(pod(False, [waiting("ImagePullBackOff")]), Reason.IMAGE_PULL, id="image-pull"),
        pytest.param(pod(False, [waiting("ErrImagePull")]), Reason.IMAGE_PULL, id="err-image-pull"),
        pytest.param(
            pod(
                False,
                [waiting("CrashLoopBackOff", lastState={"terminated": {"reason": "Error", "exitCode": 1}})],
            ),
            Reason.CRASH_LOOP,
            id="crash-loop",
        ),
        pytest.param(
            pod(
                False,
                [
                    waiting(
                        "CrashLoopBackOff", lastState={"terminated": {"reason": "OOMKilled", "exitCode": 137}}
                    )
                ],
            ),
            Reason.OOM_KILLED,
            id="oom-in-crash-loop",
        ),
        pytest.param(
            pod(False, [{"name": "x", "ready": False, "state": {"terminated": {"reason": "OOMKilled"}}}]),
            Reason.OOM_KILLED,
            id="oom-terminated",
        ),
        pytest.param(
            pod(False, [waiting("CreateContainerConfigError")]), Reason.START_ERROR, id="config-error"
        ),
        pytest.param(
            pod(False, [{"name": "x", "state": {"terminated": {"reason": "StartError", "message": "exec"}}}]),
            Reason.START_ERROR,
            id="start-error",
        ),
        pytest.param(
            pod(False, phase="Failed", reason="Evicted", message="low memory"), Reason.EVICTED, id="evicted"
        ),
        pytest.param(
            pod(
                False,
                conditions=[
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3"}
                ],
            ),
            Reason.UNSCHEDULABLE,
            id="unschedulable",
        ),
        pytest.param(pod(False, [waiting("ContainerCreating")]), None, id="still-creating"),
    ],
)
def test_pod_failure_reads_upstream_reasons(the_pod: dict[str, Any], reason: Reason | None) -> None:
    found = pod_failure(the_pod)
    assert (found[0] if found else None) == reason


def observed(**changes: Any) -> Observed:
    values: dict[str, Any] = {
        "target_nodes": 1,
        "nodeclaims": [CLAIM],
        "nodes": [NODE],
        "statefulset": STS,
        "pods": [pod()],
    }
    values.update(changes)
    return Observed(**values)


@pytest.mark.parametrize(
    ("seen", "expected", "state"),
    [
        pytest.param(observed(), [True, True, True, True, True], State.READY, id="ready"),
        pytest.param(
            observed(nodeclaims=[{"metadata": {"name": "c1"}}], nodes=[], statefulset=None, pods=[]),
            [False, False, False, False, False],
            State.PENDING,
            id="claim-pending",
        ),
        pytest.param(
            observed(nodes=[{**NODE, "status": {**NODE["status"], "capacity": {}}}]),
            [True, False, False, True, False],
            State.PENDING,
            id="no-gpu-capacity",
        ),
        pytest.param(observed(nodeclaims=None), [True, True, True, True], State.READY, id="bring-your-own"),
        pytest.param(
            observed(statefulset=None, pods=[]),
            [True, True, True, False, False],
            State.NOT_READY,
            id="no-workload",
        ),
        pytest.param(
            observed(pods=[pod(False)]), [True, True, True, False, False], State.NOT_READY, id="pod-starting"
        ),
        pytest.param(
            observed(pods=[pod(False, [waiting("ImagePullBackOff")])]),
            [True, True, True, False, False],
            State.FAILED,
            id="image-pull-fails",
        ),
        pytest.param(
            observed(nodeclaims=[], nodeclaim_crd_missing=True, nodes=[], statefulset=None, pods=[]),
            [False, False, False, False, False],
            State.PENDING,
            id="crd-missing",
        ),
    ],
)
def test_conditions_from_what_the_cluster_reports(seen: Observed, expected: list[bool], state: State) -> None:
    verdicts = conditions_from(seen)
    # as upstream: bring-your-own nodes get no NodeClaimReady
    claims = (
        [ConditionType.NODE_CLAIM_READY] if seen.nodeclaims is not None or seen.nodeclaim_crd_missing else []
    )
    assert [v.type for v in verdicts] == [
        *claims,
        ConditionType.NODES_READY,
        ConditionType.RESOURCE_READY,
        ConditionType.INFERENCE_READY,
        ConditionType.WORKSPACE_SUCCEEDED,
    ]
    assert [v.ok for v in verdicts] == expected
    assert state_of(verdicts) is state


def test_the_failing_reason_propagates_to_workspace_succeeded() -> None:
    verdicts = conditions_from(observed(pods=[pod(False, [waiting("CrashLoopBackOff")])]))
    # upstream's reason on WorkspaceSucceeded; the failing condition's own reason and detail in its message
    assert verdicts[3].reason == Reason.CRASH_LOOP
    assert verdicts[4].reason == Reason.FAILED == "workspaceFailed"
    assert (
        verdicts[4].message.startswith("ContainerCrashLoopBackOff: ")
        and "keeps crashing" in verdicts[4].message
    )


def test_upstream_reasons_when_serving_and_while_waiting() -> None:
    ready = conditions_from(observed())
    assert [v.reason for v in ready[-2:]] == ["WorkspaceInferenceStatusSuccess", "workspaceSucceeded"]
    waiting = conditions_from(observed(pods=[pod(False)]))
    assert waiting[-1].reason == Reason.PENDING == "workspacePending"
    assert waiting[-1].message.startswith("PodsNotReady: ")


def test_merge_keeps_transition_time_when_status_is_unchanged() -> None:
    first = merge_conditions(None, conditions_from(observed(pods=[pod(False)])), now="t1", generation=1)
    second = merge_conditions(first, conditions_from(observed()), now="t2", generation=1)
    times = {c["type"]: c["lastTransitionTime"] for c in second}
    assert times["ResourceReady"] == "t1"
    assert times["InferenceReady"] == "t2"
    kept = merge_conditions([{"type": "WorkspaceDeleting", "status": "True"}], [], now="t3", generation=1)
    assert kept == [{"type": "WorkspaceDeleting", "status": "True"}]


@pytest.mark.parametrize(
    ("actual", "desired", "expected"),
    [
        pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="extra-server-fields"),
        pytest.param({"a": 1}, {"a": 2}, False, id="changed-value"),
        pytest.param({"l": [{"x": 1, "y": 2}]}, {"l": [{"x": 1}]}, True, id="list-of-subsets"),
        pytest.param({"l": [{"x": 1}, {"x": 2}]}, {"l": [{"x": 1}]}, False, id="list-length"),
        pytest.param({"n": 1.0}, {"n": 1}, True, id="numbers"),
        pytest.param({}, {"a": None}, False, id="missing-key"),
    ],
)
def test_contains(actual: dict[str, Any], desired: dict[str, Any], expected: bool) -> None:
    assert contains(actual, desired) is expected


def test_drifted_ignores_status_and_server_metadata() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "labels": {"a": "b"}},
        "spec": {"ports": [{"port": 80}]},
    }
    live = {
        **desired,
        "metadata": {"name": "s", "labels": {"a": "b", "extra": "x"}, "uid": "u", "resourceVersion": "9"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
        "status": {"loadBalancer": {}},
    }
    assert not drifted(desired, live)
    assert drifted(desired, {**live, "spec": {"ports": [{"port": 8080}]}})
    assert drifted(desired, {**live, "metadata": {"name": "s", "labels": {}}})


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("resource.instanceType", ConditionType.RESOURCE_READY),
        ("inference.preset.name", ConditionType.INFERENCE_READY),
        ("inference.adapters[2].strength", ConditionType.INFERENCE_READY),
        ("metadata.name", ConditionType.WORKSPACE_SUCCEEDED),
    ],
)
def test_field_errors_land_on_the_relevant_condition(path: str, kind: ConditionType) -> None:
    assert condition_for(path) is kind


def test_settings_from_env() -> None:
    settings = settings_from_env(
        {
            "KAITO_OPERATOR_NODE_PROVISIONING": "false",
            "KAITO_OPERATOR_WEBHOOK_PORT": "8443",
            "KAITO_OPERATOR_RESYNC_SECONDS": "5",
        }
    )
    assert (settings.node_provisioning, settings.webhook.port, settings.resync_seconds) == (False, 8443, 5.0)
    assert settings.wait_delay(0) == 5.0 and settings.wait_delay(10) == 60.0
    with pytest.raises(InputError, match="KAITO_OPERATOR_METRICS_PORT='x' is not a valid int"):
        settings_from_env({"KAITO_OPERATOR_METRICS_PORT": "x"})
