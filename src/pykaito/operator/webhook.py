"""The validating admission webhook: the same admission rules as the operator, with the live context.

Loaded only when the webhook is enabled (``KAITO_OPERATOR_WEBHOOK_ENABLED=true``), because kopf
refuses to start admission handlers without a webhook server; the server itself (port, certificate
files from the mounted secret) is configured at startup from the webhook settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from pykaito.api.types import GROUP, PLURAL, VERSION
from pykaito.errors import ClusterError
from pykaito.operator import reconcile
from pykaito.operator import setwebhook as setwebhook  # InferenceSet admission, served beside this one
from pykaito.operator.children import describe_errors

logger = logging.getLogger(__name__)


def _content(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a user writes: everything but metadata and status."""
    return {k: v for k, v in (body or {}).items() if k not in {"metadata", "status"}}


@kopf.on.validate(GROUP, VERSION, PLURAL, id="validate-workspace")
async def validate_workspace(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Refuse a Workspace that breaks an admission rule, naming each field and what to do.

    A Workspace being deleted is never refused: every write then is the operator or a controller
    releasing it (finalizers, annotations), and what it names may already be gone (a namespace
    teardown deletes Secrets and ConfigMaps first). The rules that read the cluster (nodes, the
    ConfigMap and Secret it names) run on create and when an update changes more than metadata.
    """
    old, operation = kwargs.get("old"), kwargs.get("operation")
    if operation not in {"CREATE", "UPDATE"}:
        return
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    rt: reconcile.Runtime = memo.runtime
    try:
        workspace = reconcile.parse(body)
        previous = reconcile.parse(old) if operation == "UPDATE" and old else None
    except reconcile.Invalid as problem:
        raise kopf.AdmissionError(str(problem), code=422) from problem
    live = None
    if operation == "CREATE" or _content(body) != _content(old):
        try:
            live = await reconcile.live_context(rt, workspace)
        except ClusterError as exc:  # the rules needing the cluster are checked by the operator later
            logger.warning("admission without the live context: %s", exc)
    if live is None:
        errors = rt.toolkit.validate_fn(workspace, previous)
    else:
        errors = rt.toolkit.validate(workspace, previous, live)
    if errors:
        raise kopf.AdmissionError(describe_errors(errors), code=422)
