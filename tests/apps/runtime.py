"""The real inference server with the embedded SmolLM2 model, started once per test process.

Both tests/apps and tests/client use it: the first caller pays for loading the model, and
``stop_shared_runtime`` (a session finalizer) stops it once.
"""

from __future__ import annotations

import threading

from pykaito.catalog.embedded import embedded_gguf_path
from pykaito.runtime.serve import ServerHandle, llamacpp_engine, start_in_thread
from pykaito.runtime.settings import ServerSettings

_lock = threading.Lock()
_handle: list[ServerHandle] = []


def shared_runtime() -> ServerHandle:
    with _lock:
        if not _handle:
            engine = llamacpp_engine(embedded_gguf_path(), parallel=4)
            _handle.append(start_in_thread(engine, ServerSettings(host="127.0.0.1", port=0), timeout=300.0))
        return _handle[0]


def stop_shared_runtime() -> None:
    with _lock:
        while _handle:
            _handle.pop().stop()
