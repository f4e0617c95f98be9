"""Cold start on paper: how long a pod waits for its weights, downloaded or already on the node.

Two parts are figured from the plan and two rates the caller states: the weights' size (the
catalog's, measured from the published files), the download bandwidth from the hub, and the read
bandwidth of the node's disk. Engine start (CUDA graphs, warm-up) comes on top in both cases and
is not estimated here.
"""

from __future__ import annotations

from dataclasses import dataclass

GBIT = 1e9 / 8  # bytes per second in one Gbit/s
GIB = 1024**3


@dataclass(frozen=True)
class ColdStart:
    weights_gib: float
    download_gbps: float
    disk_gibs: float
    download_s: float
    read_s: float

    @property
    def cold_s(self) -> float:
        """Every pod start today: download into the pod's volume, then load."""
        return self.download_s + self.read_s

    @property
    def warm_s(self) -> float:
        """Weights already on the node (kaito.sh/use-local-weights): load only."""
        return self.read_s

    def lines(self) -> tuple[str, ...]:
        return (
            f"weights {self.weights_gib:.2f} GiB: download at {self.download_gbps:g} Gbit/s "
            f"{self.download_s:.0f} s, read from disk at {self.disk_gibs:g} GiB/s {self.read_s:.0f} s",
            f"time to weights loaded: {self.cold_s:.0f} s downloading at every pod start, "
            f"{self.warm_s:.0f} s with the weights on the node (kaito.sh/use-local-weights); "
            "engine start comes on top of both",
        )


def cold_start(weights_gib: float, download_gbps: float = 1.0, disk_gibs: float = 1.0) -> ColdStart:
    """Seconds to fetch and read ``weights_gib`` at the stated rates."""
    if download_gbps <= 0 or disk_gibs <= 0:
        raise ValueError("bandwidths must be positive")
    size = weights_gib * GIB
    return ColdStart(
        weights_gib=weights_gib,
        download_gbps=download_gbps,
        disk_gibs=disk_gibs,
        download_s=size / (download_gbps * GBIT),
        read_s=weights_gib / disk_gibs,
    )
