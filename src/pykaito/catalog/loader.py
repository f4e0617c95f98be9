"""Loading the catalog data files, and lookups that suggest the closest names on a typo."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import yaml

from pykaito.catalog.types import GgufSource, InstanceType, ModelPreset
from pykaito.errors import CatalogError

_TUPLE_FIELDS = {"runtimes"}
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _build(cls: type[Any], raw: Mapping[str, Any], source: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CatalogError(f"{source}: unknown keys {unknown} in entry {raw.get('name')!r}")
    values = {k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in raw.items()}
    gguf = values.get("cpu_gguf")
    if isinstance(gguf, Mapping):
        built: GgufSource = _build(GgufSource, gguf, f"{source}: {raw.get('name')}.cpu_gguf")
        values["cpu_gguf"] = built
        if built.verified and not (built.sha256 and built.size):
            raise CatalogError(f"{source}: {raw.get('name')}.cpu_gguf is verified but lacks size or sha256")
    revision = values.get("revision") if cls is ModelPreset else None
    if revision and not _COMMIT.fullmatch(str(revision)):
        raise CatalogError(
            f"{source}: {raw.get('name')}.revision {revision!r} is not a Hugging Face commit (40 hex digits)"
        )
    return cls(**values)


def _read(name: str) -> Any:
    text = resources.files("pykaito.catalog").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def closest(name: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """The closest known names to ``name`` (case-insensitive), best first."""
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return tuple(lowered[m] for m in matches)


def did_you_mean(suggestions: tuple[str, ...]) -> str:
    if not suggestions:
        return ""
    return " (did you mean " + " or ".join(repr(s) for s in suggestions) + "?)"


@dataclass(frozen=True)
class Catalog:
    """Model presets and instance types by name."""

    presets: Mapping[str, ModelPreset]
    instance_types: Mapping[str, InstanceType]

    def preset(self, name: str) -> ModelPreset:
        """The preset called ``name`` (also found by its Hugging Face id); CatalogError otherwise."""
        found = self.presets.get(name) or self._preset_by_model_id(name)
        if found is not None:
            return found
        suggestions = closest(name, self.presets)
        raise CatalogError(
            f"unknown preset {name!r}{did_you_mean(suggestions)}; `kaito presets` lists them all",
            suggestions,
        )

    def _preset_by_model_id(self, model_id: str) -> ModelPreset | None:
        for preset in self.presets.values():
            if preset.model_id.lower() == model_id.lower():
                return preset
        return None

    def find_preset(self, name: str) -> ModelPreset | None:
        return self.presets.get(name) or self._preset_by_model_id(name)

    def instance_type(self, name: str) -> InstanceType:
        """The instance type called ``name``; CatalogError with the closest names otherwise."""
        found = self.instance_types.get(name)
        if found is not None:
            return found
        suggestions = closest(name, self.instance_types)
        raise CatalogError(
            f"unknown instance type {name!r}{did_you_mean(suggestions)}; "
            "`kaito instance-types` lists them all",
            suggestions,
        )

    def gpu_instance_types(self) -> list[InstanceType]:
        return [t for t in self.instance_types.values() if t.has_gpu]


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with pykaito (read once per process)."""
    raw_presets = _read("presets.yaml")["presets"]
    raw_types = _read("instance_types.yaml")["instance_types"]
    presets = {p["name"]: _build(ModelPreset, p, "presets.yaml") for p in raw_presets}
    types = {t["name"]: _build(InstanceType, t, "instance_types.yaml") for t in raw_types}
    return Catalog(presets=presets, instance_types=types)
