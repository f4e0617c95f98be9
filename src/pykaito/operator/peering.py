"""Which replica acts: kopf peering's rule, for the operator's own periodic work.

With ``--peering`` (the chart's default for two replicas) kopf pauses the handlers of every replica
but one: a replica whose peering object lists a live peer of higher priority, or of the same
priority (a conflict: then all pause), stands by. kopf pauses watches, daemons and timers, but not
tasks started at startup, such as the weight cache's sweep; :func:`is_acting` applies the same rule
to the same peering object, so only the acting replica deletes anything. A peer is live while its
``lastseen`` plus ``lifetime`` lies ahead: a killed replica's entry expires, and the next takes over.

Standalone (one replica, no peering) always acts.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pykaito.operator.kubeapi import KubeApi, Resource

logger = logging.getLogger(__name__)

CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")


@dataclass(frozen=True)
class Peering:
    """This replica's place in kopf peering: the object's name ("" when standalone) and priority."""

    name: str = ""
    priority: int = 0
    clusterwide: bool = True

    @property
    def standalone(self) -> bool:
        return not self.name


def from_kopf(settings: Any) -> Peering:
    """The peering kopf runs with (its OperatorSettings, as startup handlers receive them)."""
    peering = settings.peering
    if peering.standalone or not peering.mandatory:
        return Peering()
    return Peering(
        name=str(peering.name), priority=int(peering.priority), clusterwide=bool(peering.clusterwide)
    )


def _alive(entry: Mapping[str, Any], now: datetime.datetime) -> bool:
    try:
        seen = datetime.datetime.fromisoformat(str(entry["lastseen"]))
        lifetime = float(entry.get("lifetime", 60))
    except (KeyError, TypeError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + datetime.timedelta(seconds=lifetime) > now


def acting(peers: Mapping[str, Any], priority: int, now: datetime.datetime) -> bool:
    """Whether the replica of ``priority`` acts, given the peering object's ``status`` (peer id ->
    priority, lifetime, lastseen): no live peer above it, and it alone at its priority. A replica not
    yet registered does not act (kopf starts a mandatory peering paused)."""
    live = [int(p.get("priority", 0)) for p in peers.values() if isinstance(p, Mapping) and _alive(p, now)]
    return not any(p > priority for p in live) and sum(p == priority for p in live) == 1


async def is_acting(kube: KubeApi, peering: Peering, namespace: str | None = None) -> bool:
    """Whether this replica acts now (for ``namespace``'s KopfPeering when peering per namespace)."""
    if peering.standalone:
        return True
    if peering.clusterwide:
        body = await kube.get(CLUSTER_PEERINGS, None, peering.name)
    else:
        body = await kube.get(PEERINGS, namespace, peering.name)
    if body is None:
        return False
    result = acting(body.get("status") or {}, peering.priority, datetime.datetime.now(tz=datetime.UTC))
    logger.debug(
        "peering %s: priority %d %s", peering.name, peering.priority, "acts" if result else "stands by"
    )
    return result
