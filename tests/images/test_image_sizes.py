"""The built images stay within their size aims (podman's uncompressed size, decimal MB as it
prints them): the CPU runtime image with its embedded model under 600 MB, the operator's under 450."""

from __future__ import annotations

import subprocess

import pytest

from tests.images import podman

AIM_MB = {"runtime-cpu": 600, "operator": 450}


@pytest.mark.parametrize("name", sorted(AIM_MB))
def test_image_stays_under_its_size_aim(images: dict[str, str], name: str) -> None:
    ref = images[name]
    size = subprocess.run(
        podman.podman("image", "inspect", "--format", "{{.Size}}", ref),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    megabytes = int(size) / 1e6
    assert megabytes < AIM_MB[name], (
        f"{ref} is {megabytes:.0f} MB, over its {AIM_MB[name]} MB aim; the largest packages: "
        f"scripts/images.sh podman run --rm --entrypoint sh {ref} -c "
        "'du -sm /opt/pykaito/lib/python3*/site-packages/* | sort -n | tail'"
    )
