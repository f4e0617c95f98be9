"""Test-only kopf handlers: log in to the emulated API server named by PYKAITO_TEST_API_URL."""

from __future__ import annotations

import os
from typing import Any

import kopf


@kopf.on.login()
def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(
        server=os.environ["PYKAITO_TEST_API_URL"], insecure=True, default_namespace="default"
    )
