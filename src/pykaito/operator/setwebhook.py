"""Admission for InferenceSets: the template is checked as the Workspace each replica becomes,
``replicas x nodes per replica`` against ``nodeCountLimit``, and upstream's immutable fields.

Loaded with :mod:`pykaito.operator.webhook` (only when the webhook is enabled).
"""

from __future__ import annotations

from typing import Any

import kopf

from pykaito.api.inferenceset import IS_PLURAL, IS_VERSION
from pykaito.api.types import GROUP
from pykaito.errors import ValidationError
from pykaito.operator.context import Runtime
from pykaito.operator.setcontroller import nodes_per_replica, parse


@kopf.on.validate(GROUP, IS_VERSION, IS_PLURAL, id="validate-inferenceset")
async def validate_inferenceset(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Refuse an InferenceSet that breaks an admission rule, naming each field and what to do."""
    old, operation = kwargs.get("old"), kwargs.get("operation")
    if operation not in {"CREATE", "UPDATE"}:
        return
    rt: Runtime = memo.runtime
    from pykaito.api.setrules import validate_set

    try:
        new = parse(body)
        previous = parse(old) if operation == "UPDATE" and old else None
    except ValidationError as exc:
        raise kopf.AdmissionError(str(exc), code=422) from exc
    errors = validate_set(new, previous, None, nodes_per_replica(rt))
    if errors:
        raise kopf.AdmissionError("; ".join(str(e) for e in errors), code=422)
