"""Facts about this machine that local serving is sized by: the memory free for a model."""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """What the container's memory limit still allows (cgroup v2), if there is a limit."""
    try:
        limit = (CGROUP / "memory.max").read_text(encoding="ascii").strip()
        used = int((CGROUP / "memory.current").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - used)


def available_memory() -> int:
    """Bytes of memory a new model can use now: MemAvailable, capped by a container limit."""
    candidates = [m for m in (_meminfo_available(), _cgroup_headroom()) if m is not None]
    if not candidates:
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        candidates.append(int(pages) * int(size))
    return min(candidates)
