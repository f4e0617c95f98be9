"""Workspace status from what the cluster reports: pure functions, no I/O, no clock.

``conditions_from`` reads NodeClaims, Nodes, the StatefulSet and its Pods (raw Kubernetes objects)
and says which conditions hold and why; ``pod_failure`` finds the upstream failure reasons in pod
and container statuses; ``merge_conditions`` keeps ``lastTransitionTime`` stable when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pykaito.api.types import ConditionType, State

GPU_RESOURCE = "nvidia.com/gpu"

Obj = Mapping[str, Any]


class Reason(StrEnum):
    """Machine-readable reasons on the Workspace's conditions: upstream's where they mean the same
    thing (``WorkspaceInferenceStatusSuccess``, ``workspaceSucceeded``, ``workspacePending``,
    ``workspaceFailed``, ``workspaceDeleted``, ``ResourcesReady``), ours where upstream has none."""

    INVALID = "InvalidWorkspace"
    PLAN_FAILED = "PlanFailed"
    NODECLAIMS_READY = "NodeClaimsReady"
    NODECLAIM_NOT_READY = "NodeClaimNotReady"
    NODECLAIM_CRD_MISSING = "NodeClaimCRDMissing"
    BRING_YOUR_OWN_NODES = "BringYourOwnNodes"
    NODES_READY = "NodesReady"
    NODE_NOT_READY = "NodeNotReady"
    GPU_MISSING = "GPUCapacityMissing"
    RESOURCES_READY = "ResourcesReady"
    RESOURCES_NOT_READY = "ResourcesNotReady"
    WORKLOAD_MISSING = "WorkloadMissing"
    PODS_NOT_READY = "PodsNotReady"
    INFERENCE_READY = "WorkspaceInferenceStatusSuccess"
    IMAGE_PULL = "ImagePullError"
    CRASH_LOOP = "ContainerCrashLoopBackOff"
    OOM_KILLED = "ContainerOOMKilled"
    START_ERROR = "ContainerStartError"
    EVICTED = "PodEvicted"
    UNSCHEDULABLE = "Unschedulable"
    SUCCEEDED = "workspaceSucceeded"
    PENDING = "workspacePending"
    FAILED = "workspaceFailed"
    DELETING = "workspaceDeleted"


FAILURE_REASONS = frozenset(
    {
        Reason.IMAGE_PULL,
        Reason.CRASH_LOOP,
        Reason.OOM_KILLED,
        Reason.START_ERROR,
        Reason.EVICTED,
        Reason.UNSCHEDULABLE,
    }
)
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "StartError"}
_START_TERMINATED = {"StartError", "ContainerCannotRun"}


@dataclass(frozen=True)
class Verdict:
    """One condition as computed: status True/False, a reason and a message for people."""

    type: ConditionType
    ok: bool
    reason: str
    message: str

    @property
    def status(self) -> str:
        return "True" if self.ok else "False"


@dataclass(frozen=True)
class Observed:
    """What the cluster reports for one Workspace."""

    target_nodes: int
    nodeclaims: Sequence[Obj] | None  # None: nodes are brought, not provisioned
    nodes: Sequence[Obj]
    statefulset: Obj | None
    pods: Sequence[Obj]
    needs_gpu: bool = True
    nodeclaim_crd_missing: bool = False
    gpu_resource: str = GPU_RESOURCE  # what the pods request: whole GPUs or a MIG slice


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _is_true(obj: Obj, kind: str) -> bool:
    return _conditions(obj).get(kind, {}).get("status") == "True"


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def node_ready(node: Obj, *, needs_gpu: bool, resource: str = GPU_RESOURCE) -> tuple[bool, str]:
    """Whether a node can run the inference pod, and if not, why (``resource``: the GPU resource
    the pod requests, ``nvidia.com/gpu`` or a MIG slice such as ``nvidia.com/mig-1g.10gb``)."""
    if not _is_true(node, "Ready"):
        return False, f"node {_name(node)} is not Ready"
    if needs_gpu:
        capacity = (node.get("status") or {}).get("capacity") or {}
        try:
            gpus = int(str(capacity.get(resource, "0")))
        except ValueError:
            gpus = 0
        if gpus <= 0:
            return (
                False,
                f"node {_name(node)} reports no {resource} capacity (is the GPU plugin running?)",
            )
    return True, ""


def pod_failure(pod: Obj) -> tuple[Reason, str] | None:
    """The reason a pod cannot serve, read from its status, or None if nothing is wrong (yet)."""
    status = pod.get("status") or {}
    name = _name(pod)
    if status.get("reason") == "Evicted":
        return Reason.EVICTED, f"pod {name} was evicted: {status.get('message', '')}".rstrip(": ")
    scheduled = _conditions(pod).get("PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Reason.UNSCHEDULABLE, f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"
    found: list[tuple[int, Reason, str]] = []
    for cs in list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or []):
        container = cs.get("name", "?")
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        where = f"container {container} of pod {name}"
        if terminated.get("reason") == "OOMKilled" or (
            last.get("reason") == "OOMKilled" and not cs.get("ready")
        ):
            found.append((0, Reason.OOM_KILLED, f"{where} ran out of memory (OOMKilled)"))
        elif waiting.get("reason") in _IMAGE_PULL:
            found.append(
                (1, Reason.IMAGE_PULL, f"{where} cannot pull its image: {waiting.get('message', '')}")
            )
        elif waiting.get("reason") in _START or terminated.get("reason") in _START_TERMINATED:
            detail = waiting.get("message") or terminated.get("message") or ""
            found.append((2, Reason.START_ERROR, f"{where} cannot start: {detail}"))
        elif waiting.get("reason") == "CrashLoopBackOff":
            code = last.get("exitCode")
            found.append((3, Reason.CRASH_LOOP, f"{where} keeps crashing (last exit code {code})"))
    if found:
        _, reason, message = min(found, key=lambda item: item[0])
        return reason, message.rstrip(": ")
    return None


def pod_ready(pod: Obj) -> bool:
    return _is_true(pod, "Ready") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _nodeclaim_verdict(seen: Observed) -> Verdict:
    kind = ConditionType.NODE_CLAIM_READY
    if seen.nodeclaims is None:
        return Verdict(kind, True, Reason.BRING_YOUR_OWN_NODES, "nodes are brought, not provisioned")
    if seen.nodeclaim_crd_missing:
        return Verdict(
            kind,
            False,
            Reason.NODECLAIM_CRD_MISSING,
            "the NodeClaim resource (karpenter.sh/v1) is not installed; install a node provisioner "
            "or run the operator with node provisioning disabled",
        )
    ready = [c for c in seen.nodeclaims if _is_true(c, "Ready")]
    if len(ready) >= seen.target_nodes:
        return Verdict(
            kind, True, Reason.NODECLAIMS_READY, f"{len(ready)}/{seen.target_nodes} NodeClaims ready"
        )
    problems = []
    for claim in seen.nodeclaims:
        for cond in _conditions(claim).values():
            if cond.get("status") == "False" and cond.get("message"):
                problems.append(f"{_name(claim)}: {cond.get('type')}: {cond.get('message')}")
    detail = ("; " + "; ".join(problems)) if problems else ""
    return Verdict(
        kind,
        False,
        Reason.NODECLAIM_NOT_READY,
        f"{len(ready)}/{seen.target_nodes} NodeClaims ready{detail}",
    )


def _nodes_verdict(seen: Observed) -> Verdict:
    kind = ConditionType.NODES_READY
    ready, problems = 0, []
    for node in seen.nodes:
        ok, why = node_ready(node, needs_gpu=seen.needs_gpu, resource=seen.gpu_resource)
        ready += ok
        if not ok:
            problems.append(why)
    if ready >= seen.target_nodes:
        return Verdict(kind, True, Reason.NODES_READY, f"{ready}/{seen.target_nodes} nodes ready")
    reason = Reason.GPU_MISSING if any("capacity" in p for p in problems) else Reason.NODE_NOT_READY
    detail = ("; " + "; ".join(problems)) if problems else ""
    return Verdict(kind, False, reason, f"{ready}/{seen.target_nodes} nodes ready{detail}")


def _inference_verdict(seen: Observed) -> Verdict:
    kind = ConditionType.INFERENCE_READY
    if seen.statefulset is None:
        return Verdict(kind, False, Reason.WORKLOAD_MISSING, "the inference StatefulSet does not exist yet")
    for pod in sorted(seen.pods, key=_name):
        failure = pod_failure(pod)
        if failure is not None:
            return Verdict(kind, False, failure[0], failure[1])
    want = int(((seen.statefulset.get("spec") or {}).get("replicas")) or seen.target_nodes or 1)
    ready = sum(pod_ready(p) for p in seen.pods)
    if ready >= want:
        return Verdict(kind, True, Reason.INFERENCE_READY, f"{ready}/{want} inference pods ready")
    return Verdict(kind, False, Reason.PODS_NOT_READY, f"{ready}/{want} inference pods ready")


def succeeded_verdict(failing: Verdict | None) -> Verdict:
    """WorkspaceSucceeded as upstream reports it: workspaceSucceeded, workspaceFailed or
    workspacePending; the message keeps the failing condition's own reason and detail."""
    kind = ConditionType.WORKSPACE_SUCCEEDED
    if failing is None:
        return Verdict(kind, True, Reason.SUCCEEDED, "the workspace is serving")
    failed = failing.reason in FAILURE_REASONS or failing.reason in {Reason.INVALID, Reason.PLAN_FAILED}
    reason = Reason.FAILED if failed else Reason.PENDING
    return Verdict(kind, False, reason, f"{failing.reason}: {failing.message}")


def conditions_from(seen: Observed) -> list[Verdict]:
    """Every condition of a Workspace, in upstream's order, from what the cluster reports.

    As upstream, bring-your-own nodes get no NodeClaimReady condition."""
    claims = _nodeclaim_verdict(seen) if seen.nodeclaims is not None or seen.nodeclaim_crd_missing else None
    nodes = _nodes_verdict(seen)
    if claims is not None and not claims.ok:
        resource = Verdict(ConditionType.RESOURCE_READY, False, claims.reason, claims.message)
    elif nodes.ok:
        resource = Verdict(ConditionType.RESOURCE_READY, True, Reason.RESOURCES_READY, "nodes are ready")
    else:
        resource = Verdict(ConditionType.RESOURCE_READY, False, nodes.reason, nodes.message)
    inference = _inference_verdict(seen)
    failing = resource if not resource.ok else (inference if not inference.ok else None)
    found = [nodes, resource, inference, succeeded_verdict(failing)]
    return [claims, *found] if claims is not None else found


def verdict_of(verdicts: Sequence[Verdict], kind: ConditionType) -> Verdict:
    """The verdict of one condition type (ValueError when it is not among them)."""
    for verdict in verdicts:
        if verdict.type is kind:
            return verdict
    raise ValueError(f"no {kind} condition")


def state_of(verdicts: Sequence[Verdict]) -> State:
    """The Workspace's state column from its conditions."""
    by_type = {v.type: v for v in verdicts}
    if all(v.ok for v in verdicts):
        return State.READY
    if any(
        v.reason in FAILURE_REASONS or v.reason in {Reason.INVALID, Reason.PLAN_FAILED, Reason.FAILED}
        for v in verdicts
    ):
        return State.FAILED
    resource = by_type.get(ConditionType.RESOURCE_READY)
    if resource is not None and resource.ok:
        return State.NOT_READY
    return State.PENDING


def merge_conditions(
    old: Sequence[Obj] | None, verdicts: Sequence[Verdict], *, now: str, generation: int | None
) -> list[dict[str, Any]]:
    """The new conditions list; a condition whose status did not change keeps its lastTransitionTime.

    Conditions not computed here (WorkspaceDeleting) are kept as they were.
    """
    previous = {c.get("type"): c for c in old or []}
    result: list[dict[str, Any]] = []
    for v in verdicts:
        before = previous.pop(v.type, None)
        changed = before is None or before.get("status") != v.status
        cond: dict[str, Any] = {
            "type": str(v.type),
            "status": v.status,
            "reason": str(v.reason),
            "message": v.message,
            "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),  # type: ignore[union-attr]
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        result.append(cond)
    result.extend(dict(c) for c in previous.values())
    return result


def same_conditions(a: Sequence[Obj] | None, b: Sequence[Obj] | None) -> bool:
    """Whether two conditions lists say the same thing (times aside)."""

    def key(conds: Sequence[Obj] | None) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
            for c in conds or []
        )

    return key(a) == key(b)
