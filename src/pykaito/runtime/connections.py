"""Connections from slow clients: a deadline for the request line and headers.

uvicorn closes idle keep-alive connections, but a client that sends one header byte every
few seconds resets that timer forever (slowloris). ``guarded_h11`` gives uvicorn an HTTP/1.1
protocol that closes a connection whose request head has not arrived within a deadline,
counted from the connection's start or from the end of its previous response. Body reads
have their own deadline in ``BodyLimitMiddleware``; the number of connections is capped with
uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class _GuardedH11(H11Protocol):
    header_timeout_s: float = 10.0

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # the next request on this connection gets the same deadline
        super().on_response_complete()  # a pipelined request handled here disarms it again

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        log.info(
            "closing a connection from %s: no complete request head within %g s",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            self.header_timeout_s,
        )
        self.transport.close()


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request head is slower than ``header_timeout_s``."""
    return type("GuardedH11Protocol", (_GuardedH11,), {"header_timeout_s": header_timeout_s})
