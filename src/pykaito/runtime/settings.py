"""Settings of the inference server, filled from flags and environment variables by the entry points."""

from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "KAITO_API_KEY"
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
    max_body_bytes: int = 4 * 1024 * 1024
    """Request bodies over this size are refused with 413."""
    retry_after_s: float = 1.0
    """The Retry-After a 429 advertises when the engine gives no better hint."""
    graceful_shutdown_s: float = 10.0
    """How long a stopping server lets requests in flight finish."""
    log_level: str = "info"
    access_log: bool = False
