"""The validating admission webhook: the same admission rules as the operator, with the live context.

Loaded only when the webhook is enabled (``KAITO_OPERATOR_WEBHOOK_ENABLED=true``), because kopf
refuses to start admission handlers without a webhook server; the server itself (port, certificate
files from the mounted secret) is configured at startup from the webhook settings.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from pykaito.api.types import GROUP, PLURAL, VERSION
from pykaito.errors import ClusterError
from pykaito.operator import reconcile
from pykaito.operator.children import describe_errors

logger = logging.getLogger(__name__)


@kopf.on.validate(GROUP, VERSION, PLURAL, id="validate-workspace")
async def validate_workspace(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Refuse a Workspace that breaks an admission rule, naming each field and what to do."""
    old, operation = kwargs.get("old"), kwargs.get("operation")
    if operation not in {"CREATE", "UPDATE"}:
        return
    rt: reconcile.Runtime = memo.runtime
    try:
        workspace = reconcile.parse(body)
        previous = reconcile.parse(old) if operation == "UPDATE" and old else None
    except reconcile.Invalid as problem:
        raise kopf.AdmissionError(str(problem), code=422) from problem
    try:
        live = await reconcile.live_context(rt, workspace)
    except ClusterError as exc:  # the rules needing the cluster are checked by the operator later
        logger.warning("admission without the live context: %s", exc)
        live = None
    if live is None:
        errors = rt.toolkit.validate_fn(workspace, previous)
    else:
        errors = rt.toolkit.validate(workspace, previous, live)
    if errors:
        raise kopf.AdmissionError(describe_errors(errors), code=422)
