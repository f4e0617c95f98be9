"""Test-only kopf handlers: log in to the emulated API server named by PYKAITO_TEST_API_URL, with the
bearer token in PYKAITO_TEST_API_TOKEN (the operator's ServiceAccount token in the emulator)."""

from __future__ import annotations

import os
from typing import Any

import kopf


@kopf.on.login()
def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(
        server=os.environ["PYKAITO_TEST_API_URL"],
        token=os.environ.get("PYKAITO_TEST_API_TOKEN") or None,
        insecure=True,
        default_namespace="default",
    )
