"""``kaito presets``, ``kaito instance-types`` and ``kaito version``: what pykaito knows."""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from pykaito.api.types import API_VERSION
from pykaito.catalog.loader import load_catalog
from pykaito.catalog.types import InstanceType, ModelPreset
from pykaito.cli.output import OutputFormat, console, emit

OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table (fits 80 columns), wide, json or yaml")
]
TABLES = (OutputFormat.table, OutputFormat.wide)


class Cloud(StrEnum):
    azure = "azure"
    aws = "aws"
    gcp = "gcp"


def matching_presets(
    text: str | None = None, runtime: str | None = None, max_size: float | None = None
) -> list[ModelPreset]:
    """Presets whose name or model id contains ``text``, that run on ``runtime``, up to ``max_size`` GiB."""
    found = []
    for preset in load_catalog().presets.values():
        if text and text.lower() not in preset.name.lower() and text.lower() not in preset.model_id.lower():
            continue
        if runtime and runtime not in preset.runtimes:
            continue
        if max_size is not None and preset.size_gib > max_size:
            continue
        found.append(preset)
    return found


def matching_instance_types(cloud: str | None = None, gpu: str | None = None) -> list[InstanceType]:
    """Instance types of ``cloud`` whose GPU model contains ``gpu`` (case-insensitive)."""
    found = []
    for instance in load_catalog().instance_types.values():
        if cloud and instance.cloud != cloud:
            continue
        if gpu and (not instance.has_gpu or gpu.lower() not in instance.gpu_model.lower()):
            continue
        found.append(instance)
    return found


def _parsers(preset: ModelPreset) -> str:
    parts = []
    if preset.tool_call_parser:
        parts.append(f"tools: {preset.tool_call_parser}")
    if preset.reasoning_parser:
        parts.append(f"reasoning: {preset.reasoning_parser}")
    return ", ".join(parts)


def _preset_dict(preset: ModelPreset) -> dict[str, Any]:
    data = asdict(preset)
    data["runtimes"] = list(preset.runtimes)
    return data


def presets(
    text: Annotated[
        str | None, typer.Argument(metavar="[FILTER]", help="Part of a name or model id.")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="Only presets that run on vllm, transformers or llamacpp.")
    ] = None,
    max_size: Annotated[
        float | None, typer.Option("--max-size", help="Only models up to this many GiB of weights.")
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List the model presets."""
    found = matching_presets(text, runtime, max_size)
    if output not in TABLES:
        emit([_preset_dict(p) for p in found], output)
        return
    wide = output is OutputFormat.wide
    columns = ["name", "model id", "GiB", "context", "token", "runtimes", "parsers"]
    if not wide:
        columns = ["name", "GiB", "context", "token", "runtimes"]
    caption = "GiB: size of the weights · context: longest prompt + reply, in tokens · token: a Hugging Face"
    caption += " token is needed to download" + ("" if wide else " · -o wide adds model ids and parsers")
    table = Table(title=f"{len(found)} model presets", caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("GiB", "context") else "left",
            overflow="fold",
            no_wrap=column in ("name", "GiB", "context", "token"),
        )
    for p in found:
        cells = {
            "name": p.name,
            "model id": p.model_id,
            "GiB": f"{p.size_gib:.2f}",
            "context": str(p.context_length),
            "token": "needed" if p.download_token_required else "",
            "runtimes": ",".join(p.runtimes),
            "parsers": _parsers(p),
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)


def instance_types(
    cloud: Annotated[Cloud | None, typer.Option("--cloud", help="azure, aws or gcp.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="Part of a GPU model, e.g. A100 or H100.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List the instance types and their GPUs."""
    found = matching_instance_types(cloud.value if cloud else None, gpu)
    if output not in TABLES:
        emit([asdict(t) for t in found], output)
        return
    wide = output is OutputFormat.wide
    columns = ["name", "cloud", "GPUs", "GPU", "GiB/GPU", "GiB", "GB/s", "util"]
    if not wide:
        columns = ["name", "cloud", "GPUs", "GPU", "GiB/GPU"]
    caption = "GiB/GPU: memory of one GPU"
    caption += (
        " · GiB: all GPUs · GB/s: memory bandwidth · util: share of GPU memory the engine may use"
        if wide
        else " · -o wide adds totals, bandwidth and utilization"
    )
    table = Table(title=f"{len(found)} instance types", caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("name", "cloud", "GPU") else "right",
            overflow="fold",
            no_wrap=column != "GPU",
        )
    for t in found:
        cells = {
            "name": t.name,
            "cloud": t.cloud,
            "GPUs": str(t.gpu_count),
            "GPU": t.gpu_model if t.has_gpu else "CPU only",
            "GiB/GPU": f"{t.per_gpu_memory_gib:g}",
            "GiB": f"{t.gpu_memory_gib:g}",
            "GB/s": f"{t.memory_bandwidth_gbs:g}",
            "util": f"{t.gpu_memory_utilization:.2f}" if t.has_gpu else "",
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)


def package_version() -> str:
    try:
        return version("pykaito")
    except PackageNotFoundError:
        return "unknown"


def version_cmd(output: OutputOption = OutputFormat.table) -> None:
    """Print pykaito's version and the Workspace API version it speaks."""
    if output is not OutputFormat.table:
        emit({"pykaito": package_version(), "workspaceAPI": API_VERSION}, output)
        return
    console.print(f"pykaito {package_version()} (Workspace API {API_VERSION})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("presets")(presets)
    app.command("instance-types")(instance_types)
    app.command("version")(version_cmd)
