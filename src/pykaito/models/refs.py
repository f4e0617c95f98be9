"""What ``kaito pull NAME`` means: a catalog preset, a Hugging Face ``org/repo[:file.gguf]``, or a URL.

Parsing is pure: it reads the catalog and the text, nothing else. Which file of a repository to take
when none is named is decided later, by :mod:`pykaito.models.pull`, from the repository's listing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from pykaito.catalog import Catalog
from pykaito.catalog.loader import closest, did_you_mean
from pykaito.errors import CatalogError

HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
QUANTIZATION = re.compile(
    r"(?<![A-Za-z0-9])(IQ[1-4]_[A-Z]+|Q[2-8]_K(?:_[SMLX]+)?|Q[4-8]_[01]|BF16|F16|F32|MXFP4)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# When a repository holds several GGUFs and none is named, the first of these that matches wins.
PREFERRED_QUANTIZATIONS = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q8_0")


@dataclass(frozen=True)
class ModelRef:
    """A model to pull, with what is known before asking the hub.

    ``kind`` is ``preset``, ``huggingface`` or ``url``. ``file`` is empty when the repository's listing
    must choose it. ``size`` and ``sha256`` are expected values when recorded (the catalog, ``--sha256``).
    ``checksum`` says where ``sha256`` comes from: ``given`` (``--sha256``), ``verified`` (a catalog
    entry computed from the file itself), ``unverified`` (a catalog entry from public manifests), or
    ``""`` (none known before the download).
    """

    kind: str
    name: str
    repo: str = ""
    file: str = ""
    revision: str = "main"
    url: str = ""
    quantization: str = ""
    size: int | None = None
    sha256: str | None = None
    preset: str = ""
    checksum: str = ""

    @property
    def trusted(self) -> bool:
        """Whether a checksum known before the download, and not only the server's word, vouches for it."""
        return self.checksum in ("given", "verified")


def quantization_of(file_name: str) -> str:
    """The quantization a GGUF's file name announces (``Q4_K_M``), or ``""``."""
    found = QUANTIZATION.search(file_name)
    return found.group(1).upper() if found else ""


def choose_gguf(files: list[str]) -> str | None:
    """The GGUF to take from a repository listing: the preferred quantization, else the only one."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
    single = [f for f in ggufs if not re.search(r"-\d{5}-of-\d{5}\.gguf$", f)]
    for wanted in PREFERRED_QUANTIZATIONS:
        for candidate in single:
            if quantization_of(candidate.rsplit("/", 1)[-1]) == wanted:
                return candidate
    return single[0] if len(single) == 1 else None


def _preset_checksum(given: str | None, recorded: str | None, verified: bool) -> str:
    if given:
        return "given"
    if recorded:
        return "verified" if verified else "unverified"
    return ""


def parse_ref(text: str, catalog: Catalog, sha256: str | None = None) -> ModelRef:
    """Read ``NAME`` as given to ``kaito pull``; CatalogError says what forms are accepted."""
    text = text.strip()
    expected = sha256.lower() if sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise CatalogError(f"--sha256 {sha256!r} is not a SHA-256 (64 hexadecimal digits)")
    if text.startswith(("http://", "https://")):
        path = unquote(urlparse(text).path)
        file_name = path.rsplit("/", 1)[-1]
        if not file_name.lower().endswith(".gguf"):
            raise CatalogError(f"{text}: the URL must name a .gguf file (it ends in {file_name or '/'!r})")
        return ModelRef(
            kind="url",
            name=file_name[: -len(".gguf")],
            url=text,
            file=file_name,
            quantization=quantization_of(file_name),
            sha256=expected,
            checksum="given" if expected else "",
        )
    preset = catalog.find_preset(text)
    if preset is not None:
        source = preset.cpu_gguf
        if source is None:
            raise CatalogError(
                f"{preset.name} has no GGUF for the CPU engine in the catalog; pull a GGUF of it from "
                "Hugging Face instead: `kaito pull ORG/REPO:FILE.gguf`"
            )
        return ModelRef(
            kind="preset",
            name=preset.name,
            repo=source.repo,
            file=source.file,
            revision=source.revision,
            quantization=source.quantization,
            size=source.size,
            sha256=expected or source.sha256,
            preset=preset.name,
            checksum=_preset_checksum(expected, source.sha256, source.verified),
        )
    repo, _, file_name = text.partition(":")
    if HF_REPO.match(repo):
        if file_name and not file_name.lower().endswith(".gguf"):
            raise CatalogError(f"{text}: the file after ':' must be a .gguf file, got {file_name!r}")
        return ModelRef(
            kind="huggingface",
            name=f"{repo}:{file_name}" if file_name else repo,
            repo=repo,
            file=file_name,
            quantization=quantization_of(file_name),
            sha256=expected,
            checksum="given" if expected else "",
        )
    raise CatalogError(
        f"{text!r} is not a preset, a Hugging Face ORG/REPO[:FILE.gguf] or an http(s) URL"
        f"{did_you_mean(closest(text, catalog.presets))}; `kaito presets` lists the presets",
    )
