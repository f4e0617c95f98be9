"""InferenceSets in and out of YAML, the Workspace each replica is, and the admission rules.

``validate_set(new, old, context, nodes_per_replica)`` returns every broken rule as a FieldError,
like :func:`pykaito.api.validation.validate` for a Workspace; the template is validated as the
Workspace each replica becomes, its errors reported under ``spec.template``. The node count of one
replica comes from the planner, which this package may not import: callers pass a function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

from pykaito.api.inferenceset import (
    ANNOTATION_ACTIVATION_THRESHOLD,
    ANNOTATION_AUTO_PROVISION,
    ANNOTATION_MAX_REPLICAS,
    ANNOTATION_MIN_REPLICAS,
    ANNOTATION_SCALE_DOWN_COOLDOWN,
    ANNOTATION_SCALE_UP_COOLDOWN,
    ANNOTATION_THRESHOLD,
    IS_KIND,
    IS_SERVED_VERSIONS,
    LABEL_CREATED_BY,
    InferenceSet,
)
from pykaito.api.loading import (
    Documents,
    SchemaError,
    _error_message,
    field_errors,
    field_path,
    to_dict,
)
from pykaito.api.names import is_dns1123_label
from pykaito.api.types import API_VERSION, GROUP, ObjectMeta, ResourceSpec, Workspace
from pykaito.api.validation import ValidationContext, validate
from pykaito.errors import FieldError, InputError, PykaitoError

NodesPerReplica = Callable[[Workspace], int]
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


# --- reading -----------------------------------------------------------------------------------


def is_inferenceset(obj: Mapping[str, Any]) -> bool:
    api_version = obj.get("apiVersion")
    return obj.get("kind") == IS_KIND and isinstance(api_version, str) and api_version.split("/")[0] == GROUP


def parse_set(data: Mapping[str, Any], source: str = "<object>") -> InferenceSet:
    """An InferenceSet from a plain dict; SchemaError (with field paths) on the wrong shape."""
    try:
        return InferenceSet.model_validate(dict(data), strict=True)
    except pydantic.ValidationError as exc:
        errors = [FieldError(field_path(tuple(e["loc"])), _set_message(e)) for e in exc.errors()]
        raise SchemaError(source, errors) from exc


def _set_message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown field {str(err['loc'][-1])!r}: remove it"
    return _error_message(err)


def sets_in(docs: Documents) -> list[InferenceSet]:
    """The InferenceSets among a file's documents (they arrive with the non-Workspace objects)."""
    found = [o for o in docs.others if is_inferenceset(o)]
    many = len(found) > 1
    return [
        parse_set(o, f"{docs.source} ({IS_KIND} {number})" if many else docs.source)
        for number, o in enumerate(found, start=1)
    ]


def collect_sets(docs: Documents) -> tuple[list[InferenceSet], list[SchemaError]]:
    """The InferenceSets that parse, and one ``SchemaError`` (with ``file:line``) per one that does not."""
    nodes = docs.other_nodes or (None,) * len(docs.others)
    found = [(o, n) for o, n in zip(docs.others, nodes, strict=True) if is_inferenceset(o)]
    many = len(found) > 1
    sets: list[InferenceSet] = []
    invalid: list[SchemaError] = []
    for number, (obj, node) in enumerate(found, start=1):
        where = f"{docs.source} ({IS_KIND} {number})" if many else docs.source
        try:
            sets.append(InferenceSet.model_validate(dict(obj), strict=True))
        except pydantic.ValidationError as exc:
            invalid.append(SchemaError(where, field_errors(exc, docs.source, node, _set_message)))
    return sets, invalid


def set_to_dict(inference_set: InferenceSet) -> dict[str, Any]:
    body = inference_set.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    ordered: dict[str, Any] = {"apiVersion": inference_set.apiVersion, "kind": inference_set.kind}
    for key in ("metadata", "spec", "status"):
        if key in body:
            ordered[key] = body[key]
    return ordered


# --- the Workspace each replica is -------------------------------------------------------------


def child_workspace(inference_set: InferenceSet, index: int) -> Workspace:
    """Replica ``index`` as a Workspace: the template's fields, the set's selector and labels."""
    template = inference_set.spec.template
    meta = dict(template.metadata or {})
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels[LABEL_CREATED_BY] = inference_set.name
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    resource: dict[str, Any] = {
        "labelSelector": inference_set.spec.labelSelector.model_dump(exclude_none=True)
    }
    set_resource = template.resource
    if set_resource is not None and set_resource.instanceType:
        resource["instanceType"] = set_resource.instanceType
    if (
        set_resource is not None
        and set_resource.partition is not None
        and "partition" in ResourceSpec.model_fields
    ):
        resource["partition"] = set_resource.partition.model_dump(exclude_none=True)
    return Workspace(
        apiVersion=API_VERSION,
        metadata=ObjectMeta(
            name=inference_set.child_name(index),
            namespace=inference_set.metadata.namespace,
            labels=labels,
            annotations=annotations or None,
        ),
        resource=ResourceSpec.model_validate(resource),
        inference=template.inference.model_copy(deep=True),
    )


def child_dict(inference_set: InferenceSet, index: int) -> dict[str, Any]:
    return to_dict(child_workspace(inference_set, index))


# --- admission ---------------------------------------------------------------------------------


def validate_set(
    new: InferenceSet,
    old: InferenceSet | None = None,
    context: ValidationContext | None = None,
    nodes_per_replica: NodesPerReplica | None = None,
) -> list[FieldError]:
    """Every admission rule ``new`` breaks (on create, or on update from ``old``)."""
    errors: list[FieldError] = []
    if new.apiVersion not in tuple(f"{GROUP}/{v}" for v in IS_SERVED_VERSIONS):
        errors.append(FieldError("apiVersion", f"{new.apiVersion!r} is not served; use {GROUP}/v1beta1"))
    name = new.metadata.name
    if not name:
        errors.append(FieldError("metadata.name", "required: name the InferenceSet, e.g. phi-4-mini"))
    elif not is_dns1123_label(name):
        errors.append(
            FieldError(
                "metadata.name",
                f"name {name!r} is not a DNS-1123 label: use lowercase letters, digits and '-'",
            )
        )
    elif len(name) > 56:
        errors.append(
            FieldError(
                "metadata.name",
                f"name {name!r} is {len(name)} characters; at most 56 leave room for the replica "
                "suffix (-<n>) in child Workspace names",
            )
        )
    spec = new.spec
    if spec.replicas is not None and spec.replicas < 0:
        errors.append(FieldError("spec.replicas", f"must be 0 or more, got {spec.replicas}"))
    if spec.nodeCountLimit is not None and spec.nodeCountLimit < 0:
        errors.append(
            FieldError("spec.nodeCountLimit", f"must be 0 (no limit) or more, got {spec.nodeCountLimit}")
        )
    selector = spec.labelSelector
    if not selector.matchLabels and not selector.matchExpressions:
        errors.append(
            FieldError(
                "spec.labelSelector",
                "required: give matchLabels (e.g. apps: phi-4-mini); every replica's Workspace uses it",
            )
        )
    errors += _check_strategy(new)
    errors += _check_auto_upgrade(new)
    errors += _check_autoscaling(new)
    workspace_errors: list[FieldError] = []
    if name and is_dns1123_label(name):
        child = child_workspace(new, 0)
        workspace_errors = [
            e
            for e in validate(child, None, context)
            if not e.path.startswith("metadata.name")  # the set's own name is checked above
        ]
        errors += [FieldError(_template_path(e.path), e.message) for e in workspace_errors]
        if old is not None:
            errors += _check_update(new, old)
        if not workspace_errors and nodes_per_replica is not None:
            errors += _check_node_limit(new, child, nodes_per_replica)
    return errors


def _template_path(path: str) -> str:
    if path.startswith("resource.labelSelector"):
        return "spec." + path.removeprefix("resource.")
    if path.startswith(("resource", "inference")):
        return f"spec.template.{path}"
    if path.startswith("metadata"):
        return f"spec.template.{path}"
    return f"spec.template ({path})"


def _check_update(new: InferenceSet, old: InferenceSet) -> list[FieldError]:
    def partition(s: InferenceSet) -> Any:
        res = s.spec.template.resource
        return res.partition.model_dump(exclude_none=True) if res and res.partition else None

    if partition(new) != partition(old):
        return [
            FieldError(
                "spec.template.resource.partition",
                f"cannot change after creation (was {partition(old)!r}, now {partition(new)!r}): "
                "delete the InferenceSet and create it again",
            )
        ]
    return []


def _check_node_limit(
    new: InferenceSet, child: Workspace, nodes_per_replica: NodesPerReplica
) -> list[FieldError]:
    limit = new.spec.nodeCountLimit or 0
    if limit <= 0:
        return []
    try:
        per_replica = nodes_per_replica(child)
    except PykaitoError:
        return []  # the template's own errors are reported by the Workspace rules
    wanted = new.replicas * per_replica
    if wanted <= limit:
        return []
    fits = limit // per_replica if per_replica else 0
    return [
        FieldError(
            "spec.replicas",
            f"{new.replicas} replicas x {per_replica} node(s) each = {wanted} nodes, over "
            f"spec.nodeCountLimit {limit}: set replicas to at most {fits} or raise nodeCountLimit",
        )
    ]


def _check_strategy(new: InferenceSet) -> list[FieldError]:
    strategy = new.spec.updateStrategy
    if strategy is None:
        return []
    errors = []
    if strategy.type not in (None, "RollingUpdate", "OnDelete"):
        errors.append(
            FieldError(
                "spec.updateStrategy.type", f"must be RollingUpdate or OnDelete, got {strategy.type!r}"
            )
        )
    rolling = strategy.rollingUpdate
    if rolling is not None and rolling.maxUnavailable is not None:
        value = rolling.maxUnavailable
        ok = (isinstance(value, int) and value >= 1) or (
            isinstance(value, str)
            and value.endswith("%")
            and value[:-1].isdigit()
            and 0 < int(value[:-1]) <= 100
        )
        if not ok:
            errors.append(
                FieldError(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    f"must be a whole number of at least 1 or a percentage such as '25%', got {value!r}",
                )
            )
    return errors


def _check_auto_upgrade(new: InferenceSet) -> list[FieldError]:
    policy = new.spec.autoUpgrade
    window = policy.maintenanceWindow if policy is not None else None
    if window is None:
        return []
    errors = []
    fields = window.schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        errors.append(
            FieldError(
                "spec.autoUpgrade.maintenanceWindow.schedule",
                f"{window.schedule!r} is not a 5-field cron expression such as '0 2 * * 6'",
            )
        )
    if window.duration is not None and (
        not _DURATION.match(window.duration) or window.duration.startswith("0")
    ):
        errors.append(
            FieldError(
                "spec.autoUpgrade.maintenanceWindow.duration",
                f"{window.duration!r} is not a positive duration such as '4h' or '90m'",
            )
        )
    return errors


def _number(new: InferenceSet, key: str, *, integer: bool) -> tuple[float | None, list[FieldError]]:
    raw = new.annotation(key)
    if raw is None:
        return None, []
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        return None, [
            FieldError(f'metadata.annotations["{key}"]', f'must be {kind} such as "10", got {raw!r}')
        ]
    if value < 0:
        return None, [FieldError(f'metadata.annotations["{key}"]', f"must not be negative, got {raw!r}")]
    return value, []


def _check_autoscaling(new: InferenceSet) -> list[FieldError]:
    flag = new.annotation(ANNOTATION_AUTO_PROVISION)
    if flag is None:
        return []
    errors: list[FieldError] = []
    if flag.strip().lower() not in ("true", "false"):
        errors.append(
            FieldError(
                f'metadata.annotations["{ANNOTATION_AUTO_PROVISION}"]',
                f'must be "true" or "false", got {flag!r}',
            )
        )
    numbers = {}
    for key, integer in (
        (ANNOTATION_THRESHOLD, False),
        (ANNOTATION_ACTIVATION_THRESHOLD, False),
        (ANNOTATION_MIN_REPLICAS, True),
        (ANNOTATION_MAX_REPLICAS, True),
        (ANNOTATION_SCALE_UP_COOLDOWN, True),
        (ANNOTATION_SCALE_DOWN_COOLDOWN, True),
    ):
        value, found = _number(new, key, integer=integer)
        errors += found
        numbers[key] = value
    low, high = numbers[ANNOTATION_MIN_REPLICAS], numbers[ANNOTATION_MAX_REPLICAS]
    if low is not None and high is not None and low > high:
        errors.append(
            FieldError(
                f'metadata.annotations["{ANNOTATION_MIN_REPLICAS}"]',
                f"min-replicas {int(low)} is above max-replicas {int(high)}: lower it or raise max-replicas",
            )
        )
    if high is not None and high < 1:
        errors.append(FieldError(f'metadata.annotations["{ANNOTATION_MAX_REPLICAS}"]', "must be at least 1"))
    threshold = numbers[ANNOTATION_THRESHOLD]
    if threshold is not None and threshold <= 0:
        errors.append(
            FieldError(f'metadata.annotations["{ANNOTATION_THRESHOLD}"]', 'must be above 0, e.g. "10"')
        )
    return errors


def validate_sets_or_raise(
    sets: Iterable[InferenceSet],
    context: ValidationContext | None = None,
    nodes_per_replica: NodesPerReplica | None = None,
) -> None:
    """Raise one InputError naming each set and its broken rules; return quietly when all pass."""
    problems = []
    for s in sets:
        errors = validate_set(s, None, context, nodes_per_replica)
        if errors:
            problems.append(f"InferenceSet {s.name or '?'}: " + "; ".join(str(e) for e in errors))
    if problems:
        raise InputError("\n".join(problems))
