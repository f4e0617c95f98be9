"""The operator's own Prometheus metrics, on their own registry and port."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pykaito.api.types import State


class Metrics:
    """Workspaces by state, reconcile durations, errors by handler."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.workspaces = Gauge("kaito_workspaces", "Workspaces by state.", ["state"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "kaito_reconcile_duration_seconds",
            "Time to reconcile one Workspace.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.errors = Counter(
            "kaito_reconcile_errors",
            "Reconciles that failed, by handler.",
            ["handler"],
            registry=self.registry,
        )
        self._states: dict[tuple[str, str], State] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        for state in State:
            self.workspaces.labels(state=str(state)).set(0)

    def record_state(self, namespace: str, name: str, state: State) -> None:
        with self._lock:
            self._states[(namespace, name)] = state
            self._publish()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((namespace, name), None)
            self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(State, 0)
        for state in self._states.values():
            counts[state] += 1
        for state, count in counts.items():
            self.workspaces.labels(state=str(state)).set(count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics on ``port`` (0: not at all)."""
        if port:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
