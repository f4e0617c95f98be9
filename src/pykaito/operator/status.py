"""Writing a Workspace's status: conditions, state, and an Event when the state changes."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pykaito.api.types import ConditionType, State
from pykaito.errors import FieldError
from pykaito.operator import conditions as cond
from pykaito.operator.children import condition_for, describe_errors
from pykaito.operator.context import Events, Invalid, Runtime, meta_of
from pykaito.operator.kubeapi import WORKSPACES


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def write_status(rt: Runtime, body: Mapping[str, Any], status: dict[str, Any]) -> None:
    meta = meta_of(body)
    await rt.kube.patch(
        WORKSPACES, meta.get("namespace"), str(meta.get("name")), {"status": status}, subresource="status"
    )


async def report(
    rt: Runtime,
    body: Mapping[str, Any],
    verdicts: list[cond.Verdict],
    events: Events,
    extra: dict[str, Any] | None = None,
    *,
    announce: bool = True,
) -> State:
    """Write conditions and state when they changed; an Event when the state changes (``announce``)."""
    status = dict(body.get("status") or {})
    meta = meta_of(body)
    merged = cond.merge_conditions(
        status.get("conditions"), verdicts, now=now(), generation=meta.get("generation")
    )
    state = cond.state_of(verdicts)
    rt.metrics.record_state(str(meta.get("namespace")), str(meta.get("name")), state)
    new = {"conditions": merged, "state": str(state), **(extra or {})}
    unchanged = cond.same_conditions(status.get("conditions"), merged) and all(
        status.get(k) == v for k, v in new.items() if k != "conditions"
    )
    if unchanged:
        return state
    await write_status(rt, body, new)
    if announce and status.get("state") != state:
        failing = next((v for v in verdicts if not v.ok), None)
        if failing is not None and state is State.FAILED:
            events.warn(failing.reason, failing.message)
        else:
            detail = f": {failing.message}" if failing is not None else ""
            events.info(f"State{state}", f"workspace is {state}{detail}")
    return state


async def mark_invalid(rt: Runtime, body: Mapping[str, Any], problem: Invalid, events: Events) -> None:
    by_type: dict[ConditionType, list[FieldError]] = {}
    for error in problem.errors:
        by_type.setdefault(condition_for(error.path), []).append(error)
    verdicts = [cond.Verdict(t, False, problem.reason, describe_errors(errs)) for t, errs in by_type.items()]
    if ConditionType.WORKSPACE_SUCCEEDED not in by_type:
        verdicts.append(
            cond.succeeded_verdict(
                cond.Verdict(ConditionType.WORKSPACE_SUCCEEDED, False, problem.reason, str(problem))
            )
        )
    await report(rt, body, verdicts, events, announce=False)
    events.warn(problem.reason, str(problem))
