"""An in-process port-forward: localhost:PORT to port 5000 of the pod behind a Workspace's Service.

Each accepted connection looks up a Ready pod the Service selects and opens its own port-forward
stream (``kubernetes.stream.portforward``), so a restarted or rescheduled pod is picked up by the
next connection. ``stop()`` closes the listener and every open stream.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from kubernetes.stream import portforward

from pykaito.client.kube import KubeClient, api_errors
from pykaito.errors import ClusterError

logger = logging.getLogger(__name__)

INFERENCE_PORT = 5000


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class PortForward:
    """Forward ``address:local_port`` to ``remote_port`` of the Workspace's serving pod."""

    def __init__(
        self,
        kube: KubeClient,
        workspace: str,
        *,
        local_port: int = 8080,
        remote_port: int = INFERENCE_PORT,
        address: str = "127.0.0.1",
    ) -> None:
        self.kube = kube
        self.workspace = workspace
        self.remote_port = remote_port
        self.address = address
        self._requested_port = local_port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        # the kubernetes client's portforward() swaps its ApiClient's request method while it
        # connects: any other call on that client meanwhile (another connection's pod lookup or
        # port-forward) would go astray, so connections are opened one at a time
        self._connecting = threading.Lock()

    @property
    def port(self) -> int:
        if self._listener is None:
            return self._requested_port
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def pod(self) -> str:
        """A pod that serves the Workspace: a Ready one first (pod 0 of several), else any."""
        pods = sorted(self.kube.pods_for(self.workspace), key=lambda p: str(p["metadata"]["name"]))
        if not pods:
            raise ClusterError(
                f"workspace {self.workspace!r} has no pods yet (`kaito describe {self.workspace}`)"
            )
        ready = [p for p in pods if _ready(p)]
        return str((ready or pods)[0]["metadata"]["name"])

    def start(self) -> PortForward:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.address, self._requested_port))
        except OSError as exc:
            listener.close()
            where = f"{self.address}:{self._requested_port}"
            raise ClusterError(f"cannot listen on {where} ({exc.strerror}): choose another --port") from exc
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept, name="kaito-port-forward", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to serve it: do not leave the client hanging
                conn.close()
                raise
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _open_stream(self) -> tuple[Any, socket.socket]:
        with self._connecting:
            return self._open_stream_now()

    def _open_stream_now(self) -> tuple[Any, socket.socket]:
        pod = self.pod()
        with api_errors(f"port-forwarding to pod {pod}", self.kube.server):
            forward = portforward(
                self.kube.core.connect_get_namespaced_pod_portforward,
                pod,
                self.kube.namespace,
                ports=str(self.remote_port),
            )
            try:
                remote = forward.socket(self.remote_port)
                remote.setblocking(True)
            except BaseException:
                with contextlib.suppress(Exception):
                    forward.close()
                raise
        return forward, remote

    def _serve(self, conn: socket.socket) -> None:
        """Pipe one local connection to the pod; every socket is closed whatever fails."""
        try:
            forward, remote = self._open_stream()
        except ClusterError as exc:
            logger.warning("port-forward: %s", exc)
            conn.close()
            return
        except Exception as exc:  # the websocket layer's own errors: the client sees a closed socket
            logger.warning("port-forward to %s failed: %s: %s", self.workspace, type(exc).__name__, exc)
            conn.close()
            return
        with self._lock:
            self._open.update({conn, remote})
        try:
            self._pipe(conn, remote)
        finally:
            with self._lock:
                self._open.difference_update({conn, remote})
            for end in (conn, remote):
                with contextlib.suppress(OSError):
                    end.close()
            with contextlib.suppress(Exception):
                forward.close()

    def _pipe(self, conn: socket.socket, remote: socket.socket) -> None:
        ends = [conn, remote]
        while not self._stop.is_set():
            readable, _, broken = select.select(ends, [], ends, 0.2)
            if broken:
                return
            for end in readable:
                try:
                    data = end.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                (remote if end is conn else conn).sendall(data)

    def check(self) -> str:
        """Resolve the pod now (fails early with a clear message when there is none)."""
        return self.pod()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            for end in list(self._open):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=2)
        self._listener = None

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ReplicaPortForward(PortForward):
    """Forward each local connection to the next of several Workspaces' serving pods in turn.

    For an InferenceSet: ``replicas()`` names its ready replica Workspaces (asked again for every
    connection). Its Service spreads connections over those replicas the same way, so a load of
    N connections reaches the replicas as it would in the cluster.
    """

    def __init__(
        self, kube: KubeClient, name: str, replicas: Callable[[], list[str]], *, local_port: int = 8080
    ) -> None:
        super().__init__(kube, name, local_port=local_port)
        self.replicas = replicas
        self._turn = itertools.count()

    def pod(self) -> str:
        names = self.replicas()
        start = next(self._turn)
        for i in range(len(names)):
            workspace = names[(start + i) % len(names)]
            ready = sorted(str(p["metadata"]["name"]) for p in self.kube.pods_for(workspace) if _ready(p))
            if ready:
                return ready[0]
        raise ClusterError(
            f"{self.workspace} has no ready serving pod now (`kaito describe {self.workspace}`)"
        )
