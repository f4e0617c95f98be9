"""The InferenceSet controller's decisions (pure): scaling, rollout within the budget, status."""

from __future__ import annotations

import pytest

from pykaito.operator.setdecide import Child, Decision, child_of, decide, set_status


def c(
    index: int, *, ready: bool = True, current: bool = True, deleting: bool = False, failure: str = ""
) -> Child:
    return Child(f"s-{index}", index, ready, current, deleting, failure)


@pytest.mark.parametrize(
    ("children", "desired", "expected"),
    [
        pytest.param([], 3, Decision(create=(0, 1, 2)), id="create-from-nothing"),
        pytest.param([c(0), c(2)], 3, Decision(create=(1,)), id="fill-the-lowest-gap"),
        pytest.param([c(0), c(1), c(2)], 1, Decision(delete=("s-2", "s-1")), id="down-highest-first"),
        pytest.param(
            [c(0), c(1, ready=False), c(2)], 1, Decision(delete=("s-1", "s-2")), id="down-not-ready-first"
        ),
        pytest.param([c(0), c(1)], 0, Decision(delete=("s-1", "s-0")), id="to-zero"),
        pytest.param([c(0, deleting=True)], 1, Decision(create=(1,)), id="a-deleting-name-is-not-reused"),
        pytest.param(
            [c(0, current=False), c(1, current=False), c(2, current=False)],
            3,
            Decision(create=(3,)),
            id="rollout-starts-with-one-successor",
        ),
        pytest.param(
            [c(0, current=False), c(1, current=False), c(2, current=False), c(3, ready=False)],
            3,
            Decision(),
            id="rollout-waits-for-the-successor",
        ),
        pytest.param(
            [c(0, current=False), c(1, current=False), c(2, current=False), c(3)],
            3,
            Decision(create=(4,), delete=("s-2",)),
            id="ready-successor-replaces-one",
        ),
        pytest.param(
            [c(0, current=False, ready=False), c(1, current=False), c(2)],
            2,
            Decision(create=(3,), delete=("s-0",)),
            id="outdated-not-ready-goes-first",
        ),
    ],
)
def test_decide(children: list[Child], desired: int, expected: Decision) -> None:
    assert decide(children, desired, max_unavailable=1) == expected


def test_a_larger_budget_starts_more_successors() -> None:
    outdated = [c(i, current=False) for i in range(4)]
    assert decide(outdated, 4, max_unavailable=2).create == (4, 5)


def test_a_rollout_never_drops_ready_replicas_below_desired() -> None:
    """Simulate: successors become ready one step after they are created."""
    children = {i: c(i, current=False) for i in range(3)}
    lowest = 3
    for _ in range(20):
        decision = decide(list(children.values()), 3, max_unavailable=1)
        for name in decision.delete:
            children.pop(int(name.split("-")[1]))
        children = {i: Child(x.name, x.index, True, x.current, False) for i, x in children.items()}
        for index in decision.create:
            children[index] = c(index, ready=False)
        lowest = min(lowest, sum(1 for x in children.values() if x.ready))
        if all(x.current and x.ready for x in children.values()) and len(children) == 3:
            break
    assert all(x.current for x in children.values()) and len(children) == 3
    assert lowest >= 3


def test_status_names_a_failing_replica_and_explains_zero() -> None:
    oom = "InferenceReady False (ContainerOOMKilled): container inference ran out of memory"
    status = set_status([c(0), c(1, ready=False, failure=oom)], 2, set_name="s")
    ready = {t: (st, r, m) for t, st, r, m in status.conditions}["InferenceSetReady"]
    assert (
        ready[:2] == ("False", "ReplicaFailed")
        and "s-1: InferenceReady False (ContainerOOMKilled)" in ready[2]
    )
    assert (status.replicas, status.ready) == (2, 1)
    zero = {
        t: (st, r, m)
        for t, st, r, m in set_status([], 0, set_name="s", activation="KEDA wakes it").conditions
    }
    assert zero["ScaledToZero"][0] == "True" and "kaito scale s --replicas N" in zero["ScaledToZero"][2]
    assert "KEDA wakes it" in zero["ScaledToZero"][2]


def test_child_of_reads_a_workspace() -> None:
    ws = {
        "metadata": {"name": "s-3", "annotations": {"inferenceset.kaito.sh/template-hash": "h1"}},
        "status": {"conditions": [{"type": "InferenceReady", "status": "True"}]},
    }
    assert child_of(ws, "s", "h1") == Child("s-3", 3, True, True, False, "")
    assert child_of(ws, "s", "h2") == Child("s-3", 3, True, False, False, "")
    assert child_of({"metadata": {"name": "other-1"}}, "s", "h1") is None
    assert child_of({"metadata": {"name": "s-x"}}, "s", "h1") is None
