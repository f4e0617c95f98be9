"""NVIDIA Multi-Instance GPU (MIG) profiles: which slices each GPU model offers, and their size.

A profile is written ``<compute slices>g.<memory>gb`` (``1g.10gb``: one seventh of the compute and
10 GB of memory). A pod asks for one slice with the extended resource ``nvidia.com/mig-<profile>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MIG_COMPUTE_SLICES = 7  # a whole GPU has seven compute slices
_PROFILE = re.compile(r"^(\d+)g\.(\d+(?:\.\d+)?)gb$")
_GB_TO_GIB = 1e9 / 1024**3

# GPU model (as node labels and the catalog name it) -> (GPU memory in GB, its MIG profiles).
MIG_GPUS: dict[str, tuple[int, tuple[str, ...]]] = {
    "A30": (24, ("1g.6gb", "2g.12gb", "4g.24gb")),
    "A100-40GB": (40, ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
    "A100-80GB": (80, ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    "H100-80GB": (80, ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    "H100-94GB": (94, ("1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb")),
    "GH200-96GB": (96, ("1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")),
    "H200": (141, ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")),
    "B200": (180, ("1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb")),
}


@dataclass(frozen=True)
class MigProfile:
    """One MIG slice: its name, compute slices (of seven) and memory."""

    name: str
    compute_slices: int
    memory_gb: float

    @property
    def memory_gib(self) -> float:
        return self.memory_gb * _GB_TO_GIB

    @property
    def resource(self) -> str:
        """The extended resource a pod requests for this slice."""
        return MIG_RESOURCE_PREFIX + self.name


def known_profiles() -> tuple[str, ...]:
    """Every profile any supported GPU offers, sorted by memory."""
    names = {p for _, profiles in MIG_GPUS.values() for p in profiles}
    return tuple(sorted(names, key=lambda n: (parse_profile(n).memory_gb, n)))


def parse_profile(name: str) -> MigProfile:
    """``1g.10gb`` -> MigProfile; ValueError with the expected form when it does not parse."""
    match = _PROFILE.match(name)
    if match is None or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError(f"{name!r} is not a MIG profile: write <slices>g.<memory>gb, such as 1g.10gb")
    slices = int(match.group(1))
    if slices > MIG_COMPUTE_SLICES:
        raise ValueError(f"{name!r} asks for {slices} compute slices; a GPU has {MIG_COMPUTE_SLICES}")
    return MigProfile(name=name, compute_slices=slices, memory_gb=float(match.group(2)))


def mig_gpu(product: str, memory_gib: float | None = None) -> str | None:
    """The MIG table's name for a GPU product label (``NVIDIA-A100-SXM4-80GB`` -> ``A100-80GB``)."""
    text = product.upper().replace(" ", "-").replace("_", "-")
    if "B200" in text:
        return "B200"
    if "H200" in text:
        return "H200"
    if "GH200" in text:
        return "GH200-96GB"
    if "H100" in text:
        big = "NVL" in text or "94" in text or (memory_gib is not None and memory_gib > 85)
        return "H100-94GB" if big else "H100-80GB"
    if "A100" in text:
        small = "40GB" in text or (memory_gib is not None and memory_gib < 60 and "80GB" not in text)
        return "A100-40GB" if small else "A100-80GB"
    if "A30" in text:
        return "A30"
    return None


def gpus_offering(profile: str) -> tuple[str, ...]:
    """The GPU models that offer ``profile``."""
    return tuple(gpu for gpu, (_, profiles) in MIG_GPUS.items() if profile in profiles)
