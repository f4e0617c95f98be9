"""Admission rules for Workspaces, as one pure function.

``validate(new, old, context)`` returns every broken rule as a :class:`FieldError` (a field path
and what to do); an empty list means the Workspace may be admitted. It never raises on bad input.
``old`` is the stored Workspace on an update (``None`` on create). What the cluster holds (the
nodes a selector matches, ConfigMaps, Secrets) comes in through :class:`ValidationContext`; a
field left ``None`` there means "unknown", and the rules that need it are skipped.

The rules follow upstream KAITO's validating webhook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from pykaito.api.defaults import default_runtime
from pykaito.api.loading import field_path
from pykaito.api.names import is_dns1123_label, is_dns1123_subdomain, suggest_dns1123_label
from pykaito.api.partition import check_partition
from pykaito.api.placement import check_resource
from pykaito.api.types import (
    ANNOTATION_DISABLE_BENCHMARK,
    ANNOTATION_ENABLE_LB,
    ANNOTATION_MODEL_STREAMING,
    ANNOTATION_NODE_CLASS_NAME,
    ANNOTATION_NODE_IMAGE_FAMILY,
    ANNOTATION_PERFORMANCE_MODE,
    ANNOTATION_RUNTIME,
    ANNOTATION_USE_LOCAL_WEIGHTS,
    CONFIG_KEY,
    GROUP,
    KIND,
    MAX_ADAPTERS,
    InferenceSpec,
    Runtime,
    Workspace,
)
from pykaito.catalog.loader import Catalog, closest, did_you_mean, load_catalog
from pykaito.catalog.types import ModelPreset
from pykaito.errors import FieldError, ValidationError

API_VERSIONS = (f"{GROUP}/v1beta1", f"{GROUP}/v1alpha1")
HF_TOKEN_KEY = "HF_TOKEN"
MAX_MODEL_LEN_KEY = "max-model-len"
GPU_RUNTIMES = (Runtime.VLLM.value, Runtime.TRANSFORMERS.value)

PERFORMANCE_MODES = ("balanced", "interactivity", "throughput")
NODE_IMAGE_FAMILIES = ("ubuntu", "azurelinux")
MODEL_STREAMING_VALUES = ("enabled", "disabled")
_BOOLEAN_ANNOTATIONS = (ANNOTATION_USE_LOCAL_WEIGHTS, ANNOTATION_DISABLE_BENCHMARK, ANNOTATION_ENABLE_LB)

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DECIMAL = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class ValidationContext:
    """What the cluster holds, as far as it is known (``None``: unknown, rules needing it skipped).

    ``nodes``: raw Node objects (those the label selector matches; others are filtered out);
    ``config_maps``: ConfigMap name -> its ``data``; ``secrets``: Secret name -> the keys it holds.
    All in the Workspace's namespace.
    """

    catalog: Catalog = field(default_factory=load_catalog)
    nodes: Sequence[Mapping[str, Any]] | None = None
    config_maps: Mapping[str, Mapping[str, str]] | None = None
    secrets: Mapping[str, Set[str]] | None = None


def validate(
    new: Workspace, old: Workspace | None = None, context: ValidationContext | None = None
) -> list[FieldError]:
    """Every admission rule ``new`` breaks (on create, or on update from ``old``)."""
    ctx = context if context is not None else ValidationContext()
    errors: list[FieldError] = []
    errors += _check_object(new)
    errors += _check_annotations(new)
    errors += _check_one_of(new)
    preset: ModelPreset | None = None
    if new.inference is not None:
        preset, found = _check_inference(new, new.inference, ctx, creating=old is None)
        errors += found
        errors += _check_runtime(new, preset, ctx.catalog)
        partition = new.resource.partition if new.resource is not None else None
        if partition is not None:
            errors += check_partition(new, partition, preset, ctx.catalog, ctx.nodes)
            errors += check_resource(new, preset, ctx.catalog, None)
        else:
            errors += check_resource(new, preset, ctx.catalog, ctx.nodes)
    if old is not None:
        errors += _check_update(new, old)
    return errors


def validate_or_raise(
    new: Workspace, old: Workspace | None = None, context: ValidationContext | None = None
) -> None:
    """Raise :class:`ValidationError` listing every broken rule; return quietly otherwise."""
    errors = validate(new, old, context)
    if errors:
        raise ValidationError(errors)


# --- the object itself -------------------------------------------------------------------------


def _dns_label_error(path: str, what: str, value: str) -> FieldError:
    hint = suggest_dns1123_label(value)
    suggestion = f", e.g. {hint!r}" if hint else ""
    return FieldError(
        path,
        f"{what} {value!r} is not a DNS-1123 label: use at most 63 lowercase letters, digits and '-', "
        f"starting and ending with a letter or digit{suggestion}",
    )


def _check_object(ws: Workspace) -> list[FieldError]:
    errors = []
    if ws.apiVersion not in API_VERSIONS:
        errors.append(FieldError("apiVersion", f"{ws.apiVersion!r} is not served; use {API_VERSIONS[0]}"))
    if ws.kind != KIND:
        errors.append(FieldError("kind", f"{ws.kind!r} is not a Workspace; use kind: {KIND}"))
    name = ws.metadata.name
    if not name:
        errors.append(FieldError("metadata.name", "required: name the Workspace, e.g. my-phi-4-mini"))
    elif not is_dns1123_label(name):
        errors.append(_dns_label_error("metadata.name", "name", name))
    namespace = ws.metadata.namespace
    if namespace is not None and not is_dns1123_label(namespace):
        errors.append(_dns_label_error("metadata.namespace", "namespace", namespace))
    return errors


def _annotation_error(key: str, value: str, allowed: tuple[str, ...], meaning: str) -> FieldError:
    path = field_path(("metadata", "annotations", key))
    choices = " or ".join(repr(a) for a in allowed)
    return FieldError(path, f"{value!r} is not valid: {meaning}; use {choices}, or remove the annotation")


def _check_annotations(ws: Workspace) -> list[FieldError]:
    """The values of upstream's ``kaito.sh/`` annotations (the runtime's is checked with the preset)."""
    errors: list[FieldError] = []
    mode = ws.annotation(ANNOTATION_PERFORMANCE_MODE)
    if mode is not None and mode not in PERFORMANCE_MODES:
        errors.append(
            _annotation_error(
                ANNOTATION_PERFORMANCE_MODE, mode, PERFORMANCE_MODES, "the vLLM performance preset"
            )
        )
    for key in _BOOLEAN_ANNOTATIONS:
        value = ws.annotation(key)
        if value is not None and value.strip().lower() not in ("true", "false", ""):
            errors.append(_annotation_error(key, value, ("true", "false"), "a switch"))
    family = ws.annotation(ANNOTATION_NODE_IMAGE_FAMILY)
    if family is not None and family.strip().lower() not in NODE_IMAGE_FAMILIES:
        errors.append(
            _annotation_error(
                ANNOTATION_NODE_IMAGE_FAMILY, family, NODE_IMAGE_FAMILIES, "the OS image of provisioned nodes"
            )
        )
    node_class = ws.annotation(ANNOTATION_NODE_CLASS_NAME)
    if node_class and not is_dns1123_subdomain(node_class):
        errors.append(
            FieldError(
                field_path(("metadata", "annotations", ANNOTATION_NODE_CLASS_NAME)),
                f"{node_class!r} is not a NodeClass name: use lowercase letters, digits, '-' and '.'",
            )
        )
    streaming = ws.annotation(ANNOTATION_MODEL_STREAMING)
    if streaming is not None and streaming.strip().lower() not in MODEL_STREAMING_VALUES:
        errors.append(
            _annotation_error(
                ANNOTATION_MODEL_STREAMING, streaming, MODEL_STREAMING_VALUES, "streams weights while loading"
            )
        )
    return errors


def _check_one_of(ws: Workspace) -> list[FieldError]:
    if ws.tuning is not None:
        hint = "" if ws.inference is None else "; exactly one of inference or tuning may be set"
        return [
            FieldError(
                "tuning",
                "fine-tuning is not supported yet: remove tuning and use inference (a preset, "
                f"optionally with adapters trained elsewhere) to serve the model{hint}",
            )
        ]
    if ws.inference is None:
        return [
            FieldError(
                "inference",
                "required: set inference.preset.name (e.g. phi-4-mini-instruct; `kaito presets` lists "
                "them) or inference.template",
            )
        ]
    return []


# --- inference ---------------------------------------------------------------------------------


def _check_inference(
    ws: Workspace, inference: InferenceSpec, ctx: ValidationContext, creating: bool
) -> tuple[ModelPreset | None, list[FieldError]]:
    errors: list[FieldError] = []
    preset: ModelPreset | None = None
    if inference.preset is not None and inference.template is not None:
        errors.append(
            FieldError(
                "inference.template",
                "set either inference.preset or inference.template, not both: remove one",
            )
        )
    elif inference.preset is None and inference.template is None:
        errors.append(
            FieldError(
                "inference.preset",
                "required: set inference.preset.name (e.g. phi-4-mini-instruct) or inference.template",
            )
        )
    if inference.preset is not None:
        preset, found = _check_preset_name(inference.preset.name, ctx.catalog, creating)
        errors += found
        if not found:
            errors += _check_access_secret(ws, inference, preset, ctx)
    errors += _check_adapters(inference)
    errors += _check_config(inference, preset, ctx)
    return preset, errors


def _check_preset_name(
    name: str, catalog: Catalog, creating: bool
) -> tuple[ModelPreset | None, list[FieldError]]:
    path = "inference.preset.name"
    if not name:
        return None, [FieldError(path, "required: name a preset, e.g. phi-4-mini-instruct")]
    preset = catalog.find_preset(name)
    if preset is None:
        if _HF_ID.match(name):
            return None, []
        suggestions = closest(name, [p.name for p in catalog.presets.values() if not p.deprecated])
        return None, [
            FieldError(
                path,
                f"unknown preset {name!r}{did_you_mean(suggestions)}: use a catalog preset "
                "(`kaito presets` lists them) or a Hugging Face model id such as "
                "microsoft/Phi-4-mini-instruct",
            )
        ]
    if preset.deprecated and creating:
        current = [p.name for p in catalog.presets.values() if not p.deprecated]
        suggestions = closest(preset.name, current)
        instead = f"use {' or '.join(suggestions)} instead" if suggestions else "pick another preset"
        return preset, [FieldError(path, f"preset {preset.name!r} is deprecated: {instead}")]
    return preset, []


def _check_access_secret(
    ws: Workspace, inference: InferenceSpec, preset: ModelPreset | None, ctx: ValidationContext
) -> list[FieldError]:
    assert inference.preset is not None
    path = "inference.preset.presetOptions.modelAccessSecret"
    options = inference.preset.presetOptions
    secret = options.modelAccessSecret if options is not None else None
    model = preset.model_id if preset is not None else inference.preset.name
    create = (
        f"kubectl create secret generic hf-token -n {ws.namespace} "
        f"--from-literal={HF_TOKEN_KEY}=<your Hugging Face token>"
    )
    if preset is not None and preset.download_token_required and not secret:
        return [
            FieldError(
                path,
                f"{model} is gated on Hugging Face and needs an access token: create a Secret with key "
                f"{HF_TOKEN_KEY} ({create}) and name it here",
            )
        ]
    if secret and ctx.secrets is not None:
        if secret not in ctx.secrets:
            return [FieldError(path, f"Secret {secret!r} not found in namespace {ws.namespace}: {create}")]
        if HF_TOKEN_KEY not in ctx.secrets[secret]:
            keys = ", ".join(sorted(ctx.secrets[secret])) or "none"
            return [
                FieldError(
                    path,
                    f"Secret {secret!r} has no key {HF_TOKEN_KEY} (it has: {keys}): "
                    f"put the Hugging Face token under {HF_TOKEN_KEY}",
                )
            ]
    return []


def _check_adapters(inference: InferenceSpec) -> list[FieldError]:
    adapters = inference.adapters or []
    errors: list[FieldError] = []
    if len(adapters) > MAX_ADAPTERS:
        errors.append(
            FieldError(
                "inference.adapters",
                f"{len(adapters)} adapters; at most {MAX_ADAPTERS} are allowed: "
                f"remove {len(adapters) - MAX_ADAPTERS}",
            )
        )
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        base = f"inference.adapters[{i}]"
        name = adapter.source.name
        if not is_dns1123_label(name):
            errors.append(_dns_label_error(f"{base}.source.name", "adapter name", name))
        elif name in seen:
            errors.append(
                FieldError(f"{base}.source.name", f"adapter {name!r} is listed twice: names must be unique")
            )
        seen.add(name)
        source = adapter.source
        if not (source.image or source.volumeSource or source.urls):
            errors.append(
                FieldError(
                    f"{base}.source",
                    "say where the adapter comes from: set image (an OCI image holding it), "
                    "volumeSource or urls",
                )
            )
        if adapter.strength is not None and not _is_strength(adapter.strength):
            errors.append(
                FieldError(
                    f"{base}.strength",
                    f'{adapter.strength!r} is not a decimal between 0 and 1: use e.g. "0.5" or "1.0"',
                )
            )
    return errors


def _is_strength(value: str) -> bool:
    text = value.strip()
    if not _DECIMAL.match(text):
        return False
    try:
        number = Decimal(text)
    except InvalidOperation:
        return False
    return Decimal(0) <= number <= Decimal(1)


def _check_config(
    inference: InferenceSpec, preset: ModelPreset | None, ctx: ValidationContext
) -> list[FieldError]:
    name = inference.config
    path = "inference.config"
    if name is None:
        return []
    if not is_dns1123_subdomain(name):
        return [
            FieldError(path, f"{name!r} is not a valid ConfigMap name: use lowercase letters, digits, '-'")
        ]
    if ctx.config_maps is None:
        return []
    data = ctx.config_maps.get(name)
    if data is None:
        return [
            FieldError(
                path,
                f"ConfigMap {name!r} not found: create it with a key {CONFIG_KEY} "
                f"(kubectl create configmap {name} --from-file={CONFIG_KEY})",
            )
        ]
    text = data.get(CONFIG_KEY)
    if text is None:
        keys = ", ".join(sorted(data)) or "none"
        return [FieldError(path, f"ConfigMap {name!r} has no key {CONFIG_KEY} (it has: {keys}): add it")]
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return [FieldError(path, f"ConfigMap {name!r}: {CONFIG_KEY} is not valid YAML{where}: fix it")]
    if parsed is None:
        return []
    if not isinstance(parsed, dict):
        return [
            FieldError(path, f"ConfigMap {name!r}: {CONFIG_KEY} must be a mapping such as `vllm: {{...}}`")
        ]
    vllm = parsed.get("vllm")
    if vllm is None:
        return []
    if not isinstance(vllm, dict):
        return [FieldError(path, f"ConfigMap {name!r}: `vllm` must be a mapping of engine arguments")]
    limit = vllm.get(MAX_MODEL_LEN_KEY)
    if limit is None:
        return []
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return [
            FieldError(
                path,
                f"ConfigMap {name!r}: vllm.{MAX_MODEL_LEN_KEY} must be a positive integer, got {limit!r}",
            )
        ]
    if preset is not None and limit > preset.context_length:
        return [
            FieldError(
                path,
                f"ConfigMap {name!r}: vllm.{MAX_MODEL_LEN_KEY} {limit} exceeds {preset.name}'s context "
                f"length {preset.context_length}: set it to {preset.context_length} or less",
            )
        ]
    return []


def _check_runtime(ws: Workspace, preset: ModelPreset | None, catalog: Catalog) -> list[FieldError]:
    value = ws.annotation(ANNOTATION_RUNTIME)
    if value is None:
        return []
    path = field_path(("metadata", "annotations", ANNOTATION_RUNTIME))
    allowed = preset.runtimes if preset is not None else GPU_RUNTIMES
    if value in allowed:
        return []
    default = default_runtime(ws, catalog)
    if value not in {r.value for r in Runtime}:
        return [
            FieldError(
                path,
                f"unknown runtime {value!r}: use {' or '.join(GPU_RUNTIMES)} "
                f"({Runtime.LLAMACPP.value} for CPU presets), or remove the annotation for {default}",
            )
        ]
    subject = preset.name if preset is not None else "a model outside the catalog"
    return [
        FieldError(
            path,
            f"{subject} runs on {' or '.join(allowed)}, not {value}: "
            f"set {ANNOTATION_RUNTIME}: {allowed[0]} or remove the annotation",
        )
    ]


# --- update ------------------------------------------------------------------------------------


def _immutable(path: str, before: Any, after: Any) -> FieldError:
    return FieldError(
        path,
        f"cannot change after creation (was {before!r}, now {after!r}): "
        "delete the Workspace and create it again to change it",
    )


def _check_update(new: Workspace, old: Workspace) -> list[FieldError]:
    errors: list[FieldError] = []
    if old.inference is not None and old.tuning is None and new.tuning is not None:
        errors.append(
            FieldError("tuning", "cannot switch an inference Workspace to tuning: create a new one")
        )
    if old.tuning is not None and old.inference is None and new.inference is not None:
        errors.append(
            FieldError("inference", "cannot switch a tuning Workspace to inference: create a new one")
        )

    old_res, new_res = old.resource, new.resource
    # upstream's CRD defaults count to 1, so an unset count compares as 1
    old_count = (old_res.count if old_res else None) or 1
    new_count = (new_res.count if new_res else None) or 1
    if old_count != new_count:
        errors.append(_immutable("resource.count", old_count, new_count))
    old_type = (old_res.instanceType if old_res else None) or ""
    new_type = (new_res.instanceType if new_res else None) or ""
    # As upstream: an empty instanceType may be set, and a set one cleared (moving to your own
    # nodes), but one type never changes into another.
    if old_type and new_type and old_type != new_type:
        errors.append(_immutable("resource.instanceType", old_type, new_type))
    old_part = old_res.partition.model_dump(exclude_none=True) if old_res and old_res.partition else None
    new_part = new_res.partition.model_dump(exclude_none=True) if new_res and new_res.partition else None
    if old_part != new_part:
        errors.append(_immutable("resource.partition", old_part, new_part))
    old_sel = old_res.labelSelector.model_dump(exclude_none=True) if old_res and old_res.labelSelector else {}
    new_sel = new_res.labelSelector.model_dump(exclude_none=True) if new_res and new_res.labelSelector else {}
    if old_sel != new_sel:
        errors.append(_immutable("resource.labelSelector", old_sel, new_sel))

    if old.inference is not None and new.inference is not None:
        old_preset = old.inference.preset.model_dump(exclude_none=True) if old.inference.preset else None
        new_preset = new.inference.preset.model_dump(exclude_none=True) if new.inference.preset else None
        if old_preset != new_preset:
            errors.append(_immutable("inference.preset", old_preset, new_preset))
        if (old.inference.template is None) != (new.inference.template is None):
            was = "set" if old.inference.template is not None else "unset"
            now = "set" if new.inference.template is not None else "unset"
            errors.append(
                FieldError(
                    "inference.template",
                    f"cannot go from {was} to {now} after creation: delete the Workspace and create it again",
                )
            )
    return errors
