"""The container images the rendered workloads run, one per runtime, overridable."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pykaito import __version__
from pykaito.errors import InputError

REGISTRY = "ghcr.io/pykaito"
RUNTIMES = ("vllm", "transformers", "llamacpp")


def _default(name: str) -> str:
    return f"{REGISTRY}/{name}:{__version__}"


@dataclass(frozen=True)
class Images:
    """Images for each runtime.

    The transformers runtime runs in the vLLM image, which already holds torch and transformers.
    The CPU image ships llama.cpp and the embedded model.
    """

    vllm: str = _default("runtime-vllm")
    transformers: str = _default("runtime-vllm")
    cpu: str = _default("runtime-cpu")
    pull_policy: str = "IfNotPresent"

    def for_runtime(self, runtime: str) -> str:
        """The image that runs ``runtime`` (vllm, transformers or llamacpp)."""
        if runtime == "vllm":
            return self.vllm
        if runtime == "transformers":
            return self.transformers
        if runtime == "llamacpp":
            return self.cpu
        raise InputError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")

    def with_overrides(self, overrides: dict[str, str]) -> Images:
        """A copy with ``{"vllm" | "transformers" | "cpu" | "llamacpp": image}`` replaced."""
        changes: dict[str, str] = {}
        for key, image in overrides.items():
            field = "cpu" if key == "llamacpp" else key
            if field not in ("vllm", "transformers", "cpu"):
                raise InputError(
                    f"unknown image key {key!r}: expected vllm, transformers or cpu (e.g. cpu=REPO:TAG)"
                )
            if not image:
                raise InputError(f"empty image for {key!r}: give a reference such as {key}=REPO:TAG")
            changes[field] = image
        return replace(self, **changes)
