"""Properties over generated Workspaces: round trips, schema agreement, and no exceptions."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykaito.api.crd import strict_json_schema
from pykaito.api.defaults import apply_defaults
from pykaito.api.loading import dump_workspace, load_text, to_dict
from pykaito.api.types import Workspace
from pykaito.api.validation import ValidationContext, validate
from pykaito.catalog.loader import load_catalog
from pykaito.errors import FieldError

CATALOG = load_catalog()
text = st.text(alphabet="abcXYZ019-_./ ", max_size=20)
names = st.one_of(st.sampled_from(["a", "phi", "my-ws-1"]), text)
label_values = st.one_of(st.sampled_from(["phi", "linux", "gpu"]), text)
presets = st.one_of(
    st.sampled_from(sorted(CATALOG.presets)), st.sampled_from(["org/model", "phi-4-mini"]), text
)
types = st.one_of(
    st.sampled_from(sorted(CATALOG.instance_types)), st.sampled_from(["Standard_NC1_new"]), text
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


selectors = st.builds(
    lambda labels, exprs: _drop_none({"matchLabels": labels, "matchExpressions": exprs}),
    optional(
        st.dictionaries(st.sampled_from(["apps", "kubernetes.io/os", "bad key"]), label_values, max_size=2)
    ),
    optional(
        st.lists(
            st.builds(
                lambda k, op, vs: _drop_none({"key": k, "operator": op, "values": vs}),
                st.sampled_from(["apps", "zone"]),
                st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                optional(st.lists(label_values, max_size=2)),
            ),
            max_size=2,
        )
    ),
)
adapters = st.lists(
    st.builds(
        lambda n, img, s: _drop_none({"source": _drop_none({"name": n, "image": img}), "strength": s}),
        names,
        optional(st.just("registry/adapter:1")),
        optional(st.one_of(st.sampled_from(["0", "0.5", "1", "1.5", "-1", "x"]), text)),
    ),
    max_size=12,
)
documents = st.builds(
    lambda name, ns, ann, res, preset, secret, template, config, ads, tuning: _drop_none(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": _drop_none({"name": name, "namespace": ns, "annotations": ann}),
            "resource": res,
            "inference": _drop_none(
                {
                    "preset": _drop_none(
                        {"name": preset, "presetOptions": {"modelAccessSecret": secret} if secret else None}
                    )
                    if preset is not None
                    else None,
                    "template": template,
                    "config": config,
                    "adapters": ads,
                }
            ),
            "tuning": tuning,
        }
    ),
    optional(names),
    optional(names),
    optional(
        st.dictionaries(
            st.sampled_from(["kaito.sh/runtime", "kaito.sh/bypass-resource-checks"]),
            st.sampled_from(["vllm", "transformers", "llamacpp", "True", "other"]),
            max_size=2,
        )
    ),
    optional(
        st.builds(
            lambda t, c, s, p: _drop_none(
                {"instanceType": t, "count": c, "labelSelector": s, "preferredNodes": p}
            ),
            optional(types),
            optional(st.integers(min_value=-1, max_value=4)),
            optional(selectors),
            optional(st.lists(names, max_size=2)),
        )
    ),
    optional(presets),
    optional(st.sampled_from(["hf-token", "other"])),
    optional(st.just({"spec": {"containers": [{"name": "c", "image": "i"}]}})),
    optional(st.sampled_from(["cfg", "missing", "Bad_Name"])),
    optional(adapters),
    optional(st.just({"method": "lora"})),
)
contexts = st.builds(
    lambda nodes, cms, secrets: ValidationContext(
        catalog=CATALOG, nodes=nodes, config_maps=cms, secrets=secrets
    ),
    optional(
        st.lists(
            st.builds(
                lambda n, labels: {"metadata": {"name": n, "labels": labels}},
                names,
                st.dictionaries(
                    st.sampled_from(
                        ["apps", "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"]
                    ),
                    st.one_of(label_values, st.sampled_from(["NVIDIA-A100-SXM4-80GB", "2", "81920", "0"])),
                ),
            ),
            max_size=3,
        )
    ),
    optional(
        st.dictionaries(
            st.sampled_from(["cfg", "other"]),
            st.dictionaries(
                st.sampled_from(["inference_config.yaml", "x"]),
                st.sampled_from(
                    [
                        "vllm:\n  max-model-len: 4096\n",
                        "vllm: [",
                        "- a",
                        "vllm:\n  max-model-len: 9999999\n",
                        "",
                    ]
                ),
            ),
        )
    ),
    optional(
        st.dictionaries(st.sampled_from(["hf-token"]), st.frozensets(st.sampled_from(["HF_TOKEN", "x"])))
    ),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def _schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(strict_json_schema())


@SETTINGS
@given(documents, contexts)
def test_validate_never_raises(doc: dict[str, Any], context: ValidationContext) -> None:
    ws = Workspace.model_validate(doc, strict=True)
    errors = validate(ws, context=context)
    assert all(isinstance(e, FieldError) and e.path and e.message for e in errors)
    unchanged = validate(ws, old=ws, context=context)
    assert set(unchanged) <= set(errors), "an update that changes nothing breaks no update rule"


@SETTINGS
@given(documents)
def test_dump_load_round_trip(doc: dict[str, Any]) -> None:
    ws = Workspace.model_validate(doc, strict=True)
    assert load_text(dump_workspace(ws)).workspaces == (ws,)


@SETTINGS
@given(documents)
def test_crd_schema_accepts_what_the_types_accept(doc: dict[str, Any]) -> None:
    ws = Workspace.model_validate(doc, strict=True)
    assert [e.message for e in _schema_validator().iter_errors(to_dict(ws))] == []


@SETTINGS
@given(documents)
def test_defaults_never_add_errors_about_other_fields(doc: dict[str, Any]) -> None:
    ws = Workspace.model_validate(doc, strict=True)
    before = {e.path for e in validate(ws)}
    after = {e.path for e in validate(apply_defaults(ws))}
    assert after <= before | {"metadata.namespace"}
