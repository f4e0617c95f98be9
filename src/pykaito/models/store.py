"""The local model store: one directory per pulled model under ``$KAITO_HOME/models``.

    $KAITO_HOME/models/
    └── phi-4-mini-instruct/
        ├── Phi-4-mini-instruct-Q4_K_M.gguf        the verified weights
        ├── Phi-4-mini-instruct-Q4_K_M.gguf.part   only while a pull is under way or was interrupted
        └── model.json                            written last, once the checksum matched

A model exists for pykaito only when its ``model.json`` does: a download that stopped half way is a
``.part`` file the next pull resumes, never a model. ``model.json`` is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from platformdirs import user_data_dir

from pykaito.catalog.loader import closest, did_you_mean
from pykaito.errors import CatalogError, InputError

HOME_ENV = "KAITO_HOME"
MANIFEST = "model.json"
PART_SUFFIX = ".part"


def default_root() -> Path:
    """``$KAITO_HOME/models``, or ``models`` in the platform's user data directory."""
    configured = os.environ.get(HOME_ENV)
    home = Path(configured).expanduser() if configured else Path(user_data_dir("pykaito"))
    return home / "models"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def slug(name: str) -> str:
    """A directory name for a model name: ``org/repo:file.gguf`` → ``org--repo--file.gguf``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-.") or "model"


@dataclass(frozen=True)
class StoredModel:
    """One pulled model as ``model.json`` records it; ``path`` is absolute."""

    name: str
    file: str
    path: Path
    size: int
    sha256: str
    quantization: str
    source: str  # preset, huggingface or url
    repo: str = ""
    revision: str = ""
    url: str = ""
    preset: str = ""
    pulled_at: str = ""
    last_used: str = ""
    context_length: int | None = None
    kv_bytes_per_token: int | None = None
    # whose SHA-256 the file matched: catalog (a verified entry), given, hub, catalog-unverified (the
    # hub published none); "" when none was known and only the size was checked
    checked: str = ""

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = self.path.name
        return data

    @classmethod
    def from_json(cls, directory: Path, data: dict[str, object]) -> StoredModel:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["path"] = directory / str(data["path"])
        return cls(**known)  # type: ignore[arg-type]


class ModelStore:
    """The pulled models under ``root``: list, find, record, touch and remove."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()

    def directory(self, name: str) -> Path:
        return self.root / slug(name)

    def models(self) -> list[StoredModel]:
        """Every complete model, by name; directories without a readable ``model.json`` are skipped."""
        if not self.root.is_dir():
            return []
        found = []
        for manifest in sorted(self.root.glob(f"*/{MANIFEST}")):
            model = self._read(manifest)
            if model is not None and model.path.is_file():
                found.append(model)
        return sorted(found, key=lambda m: m.name)

    def _read(self, manifest: Path) -> StoredModel | None:
        try:
            return StoredModel.from_json(manifest.parent, json.loads(manifest.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def find(self, name: str) -> StoredModel | None:
        """The model called ``name``; also found by its preset, ``org/repo``, file name or file stem."""
        models = self.models()
        for model in models:
            if model.name == name:
                return model
        lowered = name.lower()
        matches = [
            m
            for m in models
            if lowered
            in {m.preset.lower(), m.repo.lower(), m.file.lower(), m.file.lower().removesuffix(".gguf")}
        ]
        return matches[0] if len(matches) == 1 else None

    def get(self, name: str) -> StoredModel:
        """The model called ``name``; CatalogError with the closest pulled names otherwise."""
        found = self.find(name)
        if found is not None:
            return found
        names = [m.name for m in self.models()]
        raise CatalogError(
            f"no pulled model called {name!r}{did_you_mean(closest(name, names))}: "
            f"run `kaito pull {name}` first, or `kaito models` to list what is pulled",
            closest(name, names),
        )

    def record(self, model: StoredModel) -> StoredModel:
        """Write ``model.json`` for a verified file, atomically (a rename over the old one)."""
        manifest = model.path.parent / MANIFEST
        temporary = manifest.with_name(MANIFEST + ".tmp")
        temporary.write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")
        temporary.replace(manifest)
        return model

    def touch(self, model: StoredModel) -> StoredModel:
        """Record that ``model`` was just served (its ``last_used``)."""
        return self.record(replace(model, last_used=now_iso()))

    def remove(self, name: str) -> StoredModel:
        """Delete a pulled model's directory, its weights and any partial download."""
        model = self.get(name)
        if model.path.parent.resolve().parent != self.root.resolve():
            raise InputError(
                f"{model.path.parent} is not inside the model store {self.root}; not removing it"
            )
        shutil.rmtree(model.path.parent)
        return model

    def partial_bytes(self, name: str, file: str) -> int:
        """How much of ``file`` an interrupted pull of ``name`` left behind."""
        part = self.directory(name) / (file + PART_SUFFIX)
        return part.stat().st_size if part.is_file() else 0
