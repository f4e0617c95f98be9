"""The port-forward closes every accepted connection whatever fails while opening its stream."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pykaito.client.portforward import PortForward
from pykaito.errors import ClusterError


class BrokenKube:
    """A cluster whose pod lookup fails: with our error, or with one from the websocket layer."""

    server = "https://127.0.0.1:6443"
    namespace = "default"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def pods_for(self, workspace: str) -> list[dict[str, Any]]:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ClusterError("workspace 'w' has no pods yet"), id="cluster-error"),
        pytest.param(OSError("websocket handshake failed"), id="transport-error"),
    ],
)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failed_stream_closes_the_accepted_connection(error: Exception) -> None:
    kube = BrokenKube(error)
    forward = PortForward(kube, "w", local_port=0)  # type: ignore[arg-type]
    with forward, socket.create_connection(("127.0.0.1", forward.port), timeout=30) as client:
        client.settimeout(30)
        assert client.recv(1) == b""  # closed by the forward, not left hanging
    assert kube.calls == 1
