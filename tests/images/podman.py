"""Running the project's images with podman as Kubernetes would run their pods' containers.

Every podman call goes through ``scripts/images.sh podman``, so the tests use the configuration the
builds use (runc, ulimits). Containers share the host's network namespace (``--network host``) and
the tests reach them on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "images.sh"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pykaito"
UNAVAILABLE = CACHE / "containers" / "unavailable"


def podman(*args: str) -> list[str]:
    return ["bash", str(SCRIPT), "podman", *args]


def image_names() -> dict[str, str]:
    """{"operator": REF, "runtime-cpu": REF}: what ``scripts/images.sh build`` tags."""
    lines = subprocess.run(
        ["bash", str(SCRIPT), "names"], check=True, capture_output=True, text=True
    ).stdout.split()
    return {ref.rsplit("/", 1)[1].split(":", 1)[0]: ref for ref in lines}


def unavailable() -> str | None:
    """Why podman cannot run here (None when it can, or when scripts/images.sh can install it)."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "container images need Linux with podman"
    if shutil.which("podman") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        return "podman is not installed and cannot be installed here (needs root and apt-get)"
    if UNAVAILABLE.exists():  # written by scripts/images.sh when its probe container failed
        return UNAVAILABLE.read_text().strip()
    return None


def _tmpfs(path: str, volume: dict[str, Any]) -> list[str]:
    size = (volume.get("emptyDir") or {}).get("sizeLimit", "")
    options = "rw,mode=1777" + (f",size={size[:-1].lower()}" if size.endswith("i") else "")
    return ["--tmpfs", f"{path}:{options}"]


def run_args(
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    *,
    name: str,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    mounts: dict[str, str] | None = None,
) -> list[str]:
    """``podman run`` options for ``container`` of ``pod_spec``: its user, read-only root, dropped
    capabilities, environment, emptyDir volumes (tmpfs) and ``mounts`` ({mountPath: host path},
    read-only, for Secrets and files the test supplies), its command and ``args``."""
    context = {**(pod_spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    options = ["run", "--rm", "--name", name, "--init", "--network", "host", "--pull", "never"]
    if "runAsUser" in context:
        options += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"]
    if context.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for capability in (context.get("capabilities") or {}).get("drop") or []:
        options += ["--cap-drop", capability.lower()]
    for item in container.get("env") or []:
        if "value" in item:
            options += ["--env", f"{item['name']}={item['value']}"]
    for key, value in (env or {}).items():
        options += ["--env", f"{key}={value}"]
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    supplied = dict(mounts or {})
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"]
        volume = volumes.get(mount["name"], {})
        if path in supplied:
            options += ["--volume", f"{supplied.pop(path)}:{path}:ro"]
        elif "emptyDir" in volume:
            options += _tmpfs(path, volume)
    for path, source in supplied.items():
        options += ["--volume", f"{source}:{path}:ro"]
    command = container.get("command") or []
    if command:
        options += ["--entrypoint", command[0]]
    return [*options, container["image"], *command[1:], *args]


def container_name(prefix: str) -> str:
    return f"pykaito-test-{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(options: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``podman run`` in the foreground (its output in ``log``); removed whatever happens."""
    name = options[options.index("--name") + 1]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*podman(*options), stdout=out, stderr=out)
    try:
        yield process
    finally:
        if process.returncode is None:
            await remove(name)
            async with asyncio.timeout(60):
                await process.wait()


async def remove(name: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *podman("rm", "--force", "--time", "0", name),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        await process.wait()


async def signal_container(name: str, signal: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *podman("kill", "--signal", signal, name),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
