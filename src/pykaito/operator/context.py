"""What every reconcile shares: the runtime (API, settings, core, metrics, locks), Events, parsing."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pykaito.api.defaults import apply_defaults
from pykaito.api.loading import parse_workspace
from pykaito.api.types import Workspace
from pykaito.errors import FieldError, PykaitoError, ValidationError
from pykaito.operator import conditions as cond
from pykaito.operator.children import describe_errors
from pykaito.operator.kubeapi import KubeApi
from pykaito.operator.metrics import Metrics
from pykaito.operator.peering import Peering
from pykaito.operator.settings import OperatorSettings
from pykaito.operator.toolkit import Toolkit


class Events(Protocol):
    """Where a reconcile reports its steps (Kubernetes Events on the Workspace)."""

    def info(self, reason: str, message: str) -> None: ...

    def warn(self, reason: str, message: str) -> None: ...


@dataclass
class Runtime:
    """What every handler shares: API access, settings, the core, metrics, one lock per Workspace."""

    kube: KubeApi
    settings: OperatorSettings
    toolkit: Toolkit
    metrics: Metrics
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    accepted: dict[tuple[str, str], Workspace] = field(default_factory=dict)  # last valid version seen
    pending: set[tuple[str, str]] = field(default_factory=set)  # refreshes queued behind a running one
    peering: Peering = field(default_factory=Peering)  # kopf peering: which replica sweeps caches

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())


class Invalid(PykaitoError):
    """The Workspace cannot be deployed as written; ``errors`` say which fields and why."""

    def __init__(self, errors: list[FieldError], reason: cond.Reason) -> None:
        super().__init__(describe_errors(errors))
        self.errors = errors
        self.reason = reason


def meta_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def parse(body: Mapping[str, Any]) -> Workspace:
    """The Workspace (with defaults) from a raw object; Invalid when it has the wrong shape."""
    raw = copy.deepcopy(dict(body))
    raw.pop("status", None)
    try:
        workspace = parse_workspace(raw, source=f"workspace {meta_of(body).get('name')}")
    except ValidationError as exc:
        raise Invalid(exc.errors, cond.Reason.INVALID) from exc
    return apply_defaults(workspace, namespace=str(meta_of(body).get("namespace") or "default"))


def is_marked_invalid(body: Mapping[str, Any]) -> bool:
    """Whether this generation of the Workspace was already found invalid (nothing to retry)."""
    generation = meta_of(body).get("generation")
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("reason") in {cond.Reason.INVALID, cond.Reason.PLAN_FAILED}:
            return bool(c.get("observedGeneration") == generation)
    return False
