"""The images under test, built once per session by scripts/images.sh.

`make test` builds them first (`make images`) and sets PYKAITO_IMAGES_BUILT=1: the tests then only
check that they exist.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.images import podman

BUILD_TIMEOUT_S = 1500  # a cold build compiles llama.cpp; `make test` runs `make images` first


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """{"operator": REF, "runtime-cpu": REF}, built from this checkout."""
    reason = podman.unavailable()
    if reason:
        pytest.skip(reason)
    if os.environ.get("PYKAITO_IMAGES_BUILT") == "1":
        names = podman.image_names()
        for ref in names.values():
            exists = subprocess.run(podman.podman("image", "exists", ref), check=False)
            if exists.returncode != 0:
                pytest.fail(f"image {ref} is missing although PYKAITO_IMAGES_BUILT=1: run `make images`")
        return names
    try:
        result = subprocess.run(
            ["bash", str(podman.SCRIPT), "build"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/images.sh build took more than {exc.timeout} s")
    if result.returncode != 0:
        pytest.fail(f"scripts/images.sh build failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return podman.image_names()
