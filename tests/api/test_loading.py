"""Reading Workspaces from YAML and writing them back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pykaito.api.loading import (
    SchemaError,
    dump_workspace,
    dump_workspaces,
    field_path,
    load_path,
    load_text,
    load_workspace,
    load_workspaces,
    parse_workspace,
    to_dict,
)
from pykaito.api.types import Workspace
from pykaito.errors import InputError, ValidationError
from tests.api.conftest import EXAMPLE_FILES, EXAMPLES, example_params

SEED = (EXAMPLES / "workspace-phi-4-mini-h100.yaml").read_text()


def test_examples_present() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {
        "workspace-phi-4-mini-h100.yaml",
        "workspace-byo-nodes.yaml",
        "workspace-llama-3.3-70b.yaml",
        "workspace-configmap-override.yaml",
        "workspace-cpu-smollm2.yaml",
    } <= names


def test_seed_example_is_verbatim() -> None:
    assert SEED == (
        "apiVersion: kaito.sh/v1beta1\n"
        "kind: Workspace\n"
        "metadata:\n"
        "  name: workspace-phi-4-mini-h100\n"
        "resource:\n"
        '  instanceType: "Standard_NC40ads_H100_v5"\n'
        "  labelSelector:\n"
        "    matchLabels:\n"
        "      apps: phi-4-h100\n"
        "inference:\n"
        "  preset:\n"
        "    name: phi-4-mini-instruct\n"
    )


def test_seed_loads_into_typed_fields() -> None:
    ws = load_text(SEED).workspaces[0]
    assert ws.name == "workspace-phi-4-mini-h100"
    assert ws.resource is not None and ws.resource.instanceType == "Standard_NC40ads_H100_v5"
    assert ws.resource.labelSelector is not None
    assert ws.resource.labelSelector.matchLabels == {"apps": "phi-4-h100"}
    assert ws.preset_name == "phi-4-mini-instruct"
    assert ws.namespace == "default"


@pytest.mark.parametrize("path", example_params())
def test_example_round_trips(path: Path) -> None:
    docs = load_path(path)
    assert docs.workspaces, f"{path.name} holds no Workspace"
    for ws in docs.workspaces:
        text = dump_workspace(ws)
        again = load_text(text).workspaces
        assert again == (ws,)
        assert dump_workspace(again[0]) == text


def test_dump_keeps_wire_order_and_omits_unset() -> None:
    ws = load_text(SEED).workspaces[0]
    text = dump_workspace(ws)
    keys = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert keys == ["apiVersion", "kind", "metadata", "resource", "inference"]
    assert "null" not in text
    assert "count" not in text and "tuning" not in text and "status" not in text


def test_dump_orders_status_last_even_when_built_in_python() -> None:
    ws = Workspace.model_validate(
        {"status": {"state": "Ready"}, "inference": {"preset": {"name": "phi-4"}}, "metadata": {"name": "a"}}
    )
    assert list(to_dict(ws)) == ["apiVersion", "kind", "metadata", "inference", "status"]


def test_multi_document_file_skips_empty_and_returns_others() -> None:
    text = "---\n" + SEED + "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    text += "data:\n  inference_config.yaml: |\n    vllm:\n      max-model-len: 4096\n"
    text += "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hf}\nstringData: {HF_TOKEN: x}\n"
    docs = load_text(text, "multi.yaml")
    assert [w.name for w in docs.workspaces] == ["workspace-phi-4-mini-h100"]
    assert [o["kind"] for o in docs.others] == ["ConfigMap", "Secret"]
    assert docs.config_maps() == {"cfg": {"inference_config.yaml": "vllm:\n  max-model-len: 4096\n"}}
    assert docs.secrets() == {"hf": frozenset({"HF_TOKEN"})}


def test_config_maps_in_other_namespaces_are_left_out() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\ndata: {k: v}\n"
    docs = load_text(text)
    assert docs.config_maps("default") == {}
    assert docs.config_maps("other") == {"a": {"k": "v"}}


def test_kind_list_is_expanded() -> None:
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "a"}}
    text = dump_workspaces([Workspace.model_validate(ws)])
    listed = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        "- " + line if i == 0 else "  " + line for i, line in enumerate(text.splitlines(keepends=True))
    )
    assert [w.name for w in load_text(listed).workspaces] == ["a"]


def test_timestamps_stay_strings() -> None:
    text = SEED.replace(
        "  name: workspace-phi-4-mini-h100\n",
        "  name: workspace-phi-4-mini-h100\n  creationTimestamp: 2026-01-02T03:04:05Z\n",
    )
    text += "status:\n  conditions:\n  - type: ResourceReady\n    status: 'True'\n"
    text += "    lastTransitionTime: 2026-01-02T03:04:05Z\n"
    ws = load_text(text).workspaces[0]
    assert ws.metadata.model_extra == {"creationTimestamp": "2026-01-02T03:04:05Z"}
    assert ws.status is not None and ws.status.conditions is not None
    assert ws.status.conditions[0].lastTransitionTime == "2026-01-02T03:04:05Z"
    assert load_text(dump_workspace(ws)).workspaces[0] == ws


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        pytest.param("a: [1\nb: 2\n", "bad.yaml:2", "malformed YAML", id="unclosed-flow"),
        pytest.param("kind: Workspace\n  name: x\n", "bad.yaml:2", "malformed YAML", id="bad-indent"),
        pytest.param("key: 'open\n", "bad.yaml:", "malformed YAML", id="unclosed-quote"),
        pytest.param("- a\n- b\n", "bad.yaml:1", "not a Kubernetes object", id="top-level-list"),
        pytest.param("metadata: {name: a}\n", "bad.yaml:1", "no `kind`", id="no-kind"),
    ],
)
def test_unreadable_input_is_input_error_with_line(text: str, where: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        load_text(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith(where)
    assert words in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("body", "path", "words", "line"),
    [
        pytest.param(
            "resource:\n  count: two\n", "resource.count", "expected an integer", 6, id="count-string"
        ),
        pytest.param(
            "resource:\n  count: '2'\n", "resource.count", "expected an integer", 6, id="count-quoted"
        ),
        pytest.param(
            "resource:\n  labelSelector: [a]\n",
            "resource.labelSelector",
            "expected a mapping",
            6,
            id="selector-list",
        ),
        pytest.param("spec: {}\n", "spec", "unknown field 'spec'", 5, id="unknown-top-level"),
        pytest.param(
            "resource:\n  instanceTyp: x\n",
            "resource.instanceTyp",
            "did you mean 'instanceType'",
            6,
            id="typo",
        ),
        pytest.param(
            "inference:\n  adapters:\n  - source: {image: x}\n    strength: 0.5\n",
            "inference.adapters[0].source.name",
            "required field is missing",
            7,
            id="adapter-no-name",
        ),
        pytest.param(
            "inference:\n  adapters:\n  - source: {name: a}\n    strength: 0.5\n",
            "inference.adapters[0].strength",
            "quote it",
            8,
            id="strength-number",
        ),
        pytest.param(
            "inference:\n  preset: {name: x, accessMode: open}\n",
            "inference.preset.accessMode",
            "must be one of",
            6,
            id="access-mode",
        ),
        pytest.param(
            "metadata:\n  name: a\n  annotations:\n    kaito.sh/runtime: 3\n",
            'metadata.annotations["kaito.sh/runtime"]',
            "expected a string",
            8,
            id="annotation-int",
        ),
    ],
)
def test_wrong_shape_gives_field_paths(body: str, path: str, words: str, line: int) -> None:
    text = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: a\n" + body
    if body.startswith("metadata:"):
        text = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\n" + body
        line -= 2
    with pytest.raises(SchemaError) as info:
        load_text(text, "ws.yaml")
    error = info.value
    assert isinstance(error, InputError) and isinstance(error, ValidationError)
    paths = [e.path for e in error.errors]
    assert path in paths
    found = error.errors[paths.index(path)]
    assert words in found.message
    assert f"ws.yaml:{line}" in found.message
    assert str(error).startswith("ws.yaml: ")


def test_parse_workspace_from_dict() -> None:
    ws = parse_workspace(
        {"kind": "Workspace", "metadata": {"name": "a"}, "inference": {"preset": {"name": "p"}}}
    )
    assert ws.preset_name == "p"
    with pytest.raises(SchemaError) as info:
        parse_workspace({"kind": "Workspace", "resource": {"count": "x"}})
    assert [e.path for e in info.value.errors] == ["resource.count"]


def test_load_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SEED))
    docs = load_path("-")
    assert docs.source == "<stdin>"
    assert docs.workspaces[0].name == "workspace-phi-4-mini-h100"


def test_load_workspace_helpers(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(SEED)
    assert load_workspace(one).name == "workspace-phi-4-mini-h100"
    two = tmp_path / "two.yaml"
    two.write_text(SEED + "---\n" + SEED.replace("h100\n", "h100-b\n", 1))
    assert len(load_workspaces(two)) == 2
    with pytest.raises(InputError, match="exactly one"):
        load_workspace(two)
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    with pytest.raises(InputError, match="no Workspace"):
        load_workspaces(empty)
    with pytest.raises(InputError, match="no such file"):
        load_path(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="is a directory"):
        load_path(tmp_path)


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        pytest.param(("resource", "count"), "resource.count", id="plain"),
        pytest.param(
            ("inference", "adapters", 3, "source", "name"), "inference.adapters[3].source.name", id="index"
        ),
        pytest.param(
            ("metadata", "labels", "app.kubernetes.io/name"),
            'metadata.labels["app.kubernetes.io/name"]',
            id="key",
        ),
    ],
)
def test_field_path(loc: tuple[str | int, ...], expected: str) -> None:
    assert field_path(loc) == expected
