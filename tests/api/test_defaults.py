"""Defaults filled in on admission."""

from __future__ import annotations

import pytest

from pykaito.api.defaults import apply_defaults, runtime_of
from pykaito.api.types import ANNOTATION_RUNTIME, Workspace


def _ws(**body: object) -> Workspace:
    return Workspace.model_validate({"metadata": {"name": "a"}, **body})


@pytest.mark.parametrize(
    ("body", "namespace", "count", "runtime", "ns"),
    [
        pytest.param({"inference": {"preset": {"name": "phi-4"}}}, None, None, "vllm", "default", id="bare"),
        pytest.param(
            {"inference": {"preset": {"name": "phi-4"}}, "resource": {"count": 3}},
            "team",
            3,
            "vllm",
            "team",
            id="kept",
        ),
        pytest.param(
            {"inference": {"preset": {"name": "smollm2-135m-instruct"}}},
            None,
            None,
            "llamacpp",
            "default",
            id="cpu",
        ),
        pytest.param(
            {"inference": {"preset": {"name": "org/unknown"}}}, None, None, "vllm", "default", id="hf-id"
        ),
        pytest.param(
            {
                "metadata": {"name": "a", "annotations": {ANNOTATION_RUNTIME: "transformers"}},
                "inference": {"template": {}},
            },
            None,
            None,
            "transformers",
            "default",
            id="annotation-kept",
        ),
    ],
)
def test_defaults(
    body: dict[str, object], namespace: str | None, count: int | None, runtime: str, ns: str
) -> None:
    ws = _ws(**body)
    before = ws.model_dump()
    out = apply_defaults(ws, namespace=namespace)
    assert (out.resource.count if out.resource else None) == count, "count stays unset: the planner sizes"
    assert out.annotation(ANNOTATION_RUNTIME) == runtime
    assert out.metadata.namespace == ns
    assert ws.model_dump() == before, "apply_defaults must not change its argument"
    assert apply_defaults(out) == out, "defaults are idempotent"


def test_defaults_keep_existing_namespace_and_labels() -> None:
    ws = _ws(
        metadata={"name": "a", "namespace": "x", "labels": {"k": "v"}},
        inference={"preset": {"name": "phi-4"}},
    )
    out = apply_defaults(ws, namespace="other")
    assert out.metadata.namespace == "x"
    assert out.metadata.labels == {"k": "v"}
    assert out.metadata.labels is not ws.metadata.labels


def test_runtime_of_reads_annotation_or_default() -> None:
    assert runtime_of(_ws(inference={"preset": {"name": "phi-4"}})) == "vllm"
    annotated = _ws(metadata={"name": "a", "annotations": {ANNOTATION_RUNTIME: "transformers"}})
    assert runtime_of(annotated) == "transformers"
