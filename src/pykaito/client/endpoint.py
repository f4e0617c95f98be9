"""Where the chat client connects: the endpoint URL, its environment variables, its error sentence.

Kept free of heavy imports so the command line can read defaults without loading the client.
"""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "http://localhost:8080"
ENDPOINT_ENV = "KAITO_ENDPOINT"
API_KEY_ENV = "KAITO_API_KEY"


def normalize_endpoint(endpoint: str) -> str:
    """``localhost:8080/v1/`` → ``http://localhost:8080``: the server root, without ``/v1``."""
    url = endpoint.strip().rstrip("/")
    if not url:
        url = DEFAULT_ENDPOINT
    if "://" not in url:
        url = f"http://{url}"
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def default_endpoint() -> str:
    """``$KAITO_ENDPOINT``, or http://localhost:8080 where `kaito connect` and `kaito up` serve."""
    return normalize_endpoint(os.environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT))


def unreachable_message(endpoint: str) -> str:
    return f"cannot reach {endpoint}: is `kaito connect` or `kaito up` running?"
