"""Settings of the inference server, filled from flags and environment variables by the entry points."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pykaito.errors import InputError

API_KEY_ENV = "KAITO_API_KEY"
API_KEY_FILE_ENV = "KAITO_API_KEY_FILE"
DEFAULT_PORT = 5000
LOCAL_PORT = 8080


@dataclass(frozen=True)
class ServerSettings:
    """How the HTTP server behaves; the engine has its own settings."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    """Clients must send ``Authorization: Bearer <key>``; ``None`` leaves the API open."""
    served_model_name: str | None = None
    """The model id clients use; ``None`` means the engine's own model name."""
    served_model_aliases: tuple[str, ...] = ()
    """Further model ids the server answers to (listed by /v1/models after the first)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Request bodies over this size are refused with 413."""
    header_timeout_s: float = 10.0
    """A connection whose request line and headers take longer is closed (slow clients)."""
    body_timeout_s: float = 30.0
    """A request body that takes longer to arrive is answered with 408."""
    max_connections: int = 1024
    """Open connections at most; a request on a connection over the cap gets 503."""
    graceful_shutdown_s: float = 10.0
    """How long a stopping server lets requests in flight finish."""
    log_level: str = "info"
    access_log: bool = False


def resolve_api_key(
    key: str | None = None, key_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key from a flag, a file (first line) or the environment, in that order; None for an open API.

    A key given on the command line shows in ``ps``: prefer ``--api-key-file`` or ``KAITO_API_KEY``
    (a pod reads it from a Secret into the environment).
    """
    env = os.environ if environ is None else environ
    if key:
        return key
    if key_file is None and env.get(API_KEY_FILE_ENV):
        key_file = Path(env[API_KEY_FILE_ENV])
    if key_file is not None:
        try:
            text = key_file.expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the API key file {key_file}: {exc}") from exc
        lines = text.strip().splitlines()
        found = lines[0].strip() if lines else ""
        if not found:
            raise InputError(f"the API key file {key_file} is empty: write the key on its first line")
        return found
    return env.get(API_KEY_ENV) or None
