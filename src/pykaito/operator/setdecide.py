"""What an InferenceSet's controller should do next, and what its status says: pure functions.

``decide(children, desired, template_hash, max_unavailable)`` looks at the live child Workspaces and
returns the indexes to create and the names to delete:

- scale up: create the lowest free indexes;
- scale down: delete not-ready replicas first, then the highest index;
- rollout (a template change): create up to ``max_unavailable`` successors at a time, and delete an
  outdated replica only once a successor is InferenceReady, so the ready count never falls below
  ``desired - max_unavailable`` (in practice, not below ``desired`` while the old replicas were ready).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pykaito.api.inferenceset import ANNOTATION_TEMPLATE_HASH, SetConditionType
from pykaito.api.types import ConditionType

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Child:
    """One live child Workspace as the controller sees it."""

    name: str
    index: int
    ready: bool
    current: bool  # made from the current template
    deleting: bool
    failure: str = ""  # "InferenceReady False (ContainerOOMKilled): ..." when something failed


@dataclass(frozen=True)
class Decision:
    create: tuple[int, ...] = ()
    delete: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetStatus:
    replicas: int
    ready: int
    updated: int
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)  # type, status, reason, message


def _condition(obj: Obj, kind: str) -> Obj:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def child_of(obj: Obj, set_name: str, template_hash: str) -> Child | None:
    """A child Workspace object as a :class:`Child`; None when its name is not ``<set>-<n>``."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    match = re.fullmatch(re.escape(set_name) + r"-(\d+)", name)
    if match is None:
        return None
    inference = _condition(obj, ConditionType.INFERENCE_READY)
    ready = inference.get("status") == "True"
    failure = ""
    if not ready:
        for kind in (
            ConditionType.INFERENCE_READY,
            ConditionType.RESOURCE_READY,
            ConditionType.WORKSPACE_SUCCEEDED,
        ):
            c = _condition(obj, kind)
            if c.get("status") == "False" and c.get("reason"):
                failure = f"{kind} False ({c.get('reason')}): {c.get('message', '')}".rstrip(": ")
                break
    return Child(
        name=name,
        index=int(match.group(1)),
        ready=ready,
        current=(meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE_HASH) == template_hash,
        deleting=bool(meta.get("deletionTimestamp")),
        failure=failure,
    )


def _victims(children: Sequence[Child], count: int) -> list[Child]:
    """The ``count`` children to remove: not-ready first, then the highest index."""
    ordered = sorted(children, key=lambda c: (c.ready, -c.index))
    return ordered[: max(count, 0)]


def decide(children: Sequence[Child], desired: int, max_unavailable: int) -> Decision:
    live = [c for c in children if not c.deleting]
    taken = {c.index for c in children}
    updated = [c for c in live if c.current]
    outdated = [c for c in live if not c.current]
    updated_ready = sum(1 for c in updated if c.ready)
    surge = max(1, max_unavailable)

    delete: list[Child] = []
    # outdated replicas go once enough successors are ready to stand in for them
    keep_outdated = max(0, desired - updated_ready)
    delete += _victims(outdated, len(outdated) - keep_outdated)
    remaining_outdated = len(outdated) - len(delete)
    # extra updated replicas (a scale down)
    if len(updated) > desired:
        delete += _victims(updated, len(updated) - desired)
        updated_count = desired
    else:
        updated_count = len(updated)

    create: list[int] = []
    total = updated_count + remaining_outdated
    index = 0

    def room() -> bool:
        return total < desired or (total < desired + surge and remaining_outdated > 0)

    while updated_count < desired and room():
        while index in taken:
            index += 1
        create.append(index)
        taken.add(index)
        updated_count += 1
        total += 1
    return Decision(create=tuple(create), delete=tuple(c.name for c in delete))


def set_status(children: Sequence[Child], desired: int, *, set_name: str, activation: str = "") -> SetStatus:
    """status.replicas/readyReplicas and the conditions, truthfully from the children."""
    live = [c for c in children if not c.deleting]
    ready = sum(1 for c in live if c.ready)
    updated = sum(1 for c in live if c.current)
    outdated = len(live) - updated
    conditions: list[tuple[str, str, str, str]] = []
    failures = [f"{c.name}: {c.failure}" for c in sorted(live, key=lambda c: c.index) if c.failure]
    if desired == 0:
        conditions.append(
            (
                SetConditionType.READY,
                "True" if not live else "False",
                "ScaledToZero" if not live else "ScalingDown",
                "no replicas are wanted" if not live else f"removing {len(live)} replica(s) to reach 0",
            )
        )
        waking = f"; {activation}" if activation else ""
        conditions.append(
            (
                SetConditionType.SCALED_TO_ZERO,
                "True",
                "NoReplicas",
                f"replicas is 0: requests to Service {set_name} fail (no endpoints) until replicas is "
                f"raised with `kaito scale {set_name} --replicas N` or by KEDA{waking}",
            )
        )
        return SetStatus(replicas=len(live), ready=ready, updated=updated, conditions=conditions)
    conditions.append(
        (SetConditionType.SCALED_TO_ZERO, "False", "HasReplicas", f"{desired} replica(s) wanted")
    )
    if ready >= desired and outdated == 0 and len(live) == desired:
        conditions.append(
            (SetConditionType.READY, "True", "AllReplicasReady", f"{ready}/{desired} replicas ready")
        )
    elif outdated:
        message = f"rolling update: {updated} of {desired} replicas on the current template, {ready} ready"
        if failures:
            message += "; " + "; ".join(failures)
        conditions.append((SetConditionType.READY, "False", "RollingUpdate", message))
    else:
        message = f"{ready}/{desired} replicas ready"
        if failures:
            message += "; " + "; ".join(failures)
        reason = "ReplicaFailed" if failures else "ReplicasNotReady"
        conditions.append((SetConditionType.READY, "False", reason, message))
    return SetStatus(replicas=len(live), ready=ready, updated=updated, conditions=conditions)
