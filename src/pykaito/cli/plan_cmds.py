"""``kaito plan``: what a model needs on an instance type, why, and the engine's command line."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from pykaito.api.loading import load_path
from pykaito.api.types import CONFIG_KEY, Workspace
from pykaito.api.validation import validate
from pykaito.catalog.loader import Catalog, load_catalog
from pykaito.catalog.models import describe_model, is_hf_id
from pykaito.catalog.types import ModelPreset
from pykaito.cli.api_cmds import offline_context
from pykaito.cli.output import OutputFormat, console, emit
from pykaito.client.hub import fetch_model_files
from pykaito.errors import InputError, ValidationError
from pykaito.manifests.weight_cache import CACHED_RUNTIMES, DEFAULT_REVISION, cache_name
from pykaito.manifests.weight_cache import size_gib as cache_size_gib
from pykaito.planner import Plan, alternatives, plan, plan_preset, plan_to_dict
from pykaito.planner.coldstart import cold_start
from pykaito.planner.engine_args import to_argv

OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]
ALTERNATIVES = 4


def resolve_model(name: str, catalog: Catalog) -> ModelPreset:
    """A catalog preset, else a local model directory or an ``org/model`` described from its config."""
    found = catalog.find_preset(name)
    if found is not None:
        return found
    if Path(name).expanduser().is_dir() or is_hf_id(name):
        return describe_model(name, hub=fetch_model_files)
    return catalog.preset(name)  # CatalogError with suggestions


def _read_config(path: Path) -> dict[str, Any]:
    """``inference_config.yaml``: the file itself, or a ConfigMap that holds it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        data = yaml.safe_load((data.get("data") or {}).get(CONFIG_KEY) or "{}")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping such as `vllm: {{max-model-len: 4096}}`")
    return data


def _plan_file(path: Path, config: dict[str, Any] | None, catalog: Catalog) -> Plan:
    docs = load_path(path)
    if len(docs.workspaces) != 1:
        raise InputError(f"{path}: {len(docs.workspaces)} Workspaces; pass a file with exactly one")
    ws: Workspace = docs.workspaces[0]
    context, _ = offline_context(ws, docs)
    errors = validate(ws, context=context)
    if errors:
        raise ValidationError(errors)
    config_maps = docs.config_maps(ws.metadata.namespace)
    if config is None and ws.inference is not None and ws.inference.config and config_maps:
        raw = config_maps.get(ws.inference.config, {}).get(CONFIG_KEY)
        loaded = yaml.safe_load(raw) if raw else None
        config = loaded if isinstance(loaded, dict) else None
    name = ws.preset_name or ""
    model = None if catalog.find_preset(name) or not name else resolve_model(name, catalog)
    return plan(ws, catalog, config=config, model=model)


def _alternatives(result: Plan, catalog: Catalog, max_model_len: int | None) -> list[Plan]:
    if result.gpus_per_node == 0 or not result.preset or result.gpu_resource != "nvidia.com/gpu":
        return []
    preset = catalog.find_preset(result.preset) or catalog.find_preset(result.model_id)
    if preset is None:
        return []
    cloud = (
        catalog.instance_types[result.instance_type].cloud
        if result.instance_type in catalog.instance_types
        else None
    )
    return alternatives(
        preset,
        catalog,
        max_model_len=max_model_len,
        cloud=cloud,
        exclude=(result.instance_type,),
        limit=ALTERNATIVES,
    )


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _summary(result: Plan) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    hardware = (
        "CPU (no GPU)"
        if result.gpus_per_node == 0
        else f"{result.total_nodes} x {result.instance_type or 'own node'} "
        f"({result.gpus_per_node} x {result.gpu_model} each, {_gpus(result.total_gpus)})"
    )
    if result.replicas > 1 and result.preset:
        hardware += f"; {result.replicas} copies of the model"
    if not result.preset:
        return _template_summary(result, table)
    rows = [
        ("model", f"{result.preset} ({result.model_id})"),
        ("runtime", result.runtime),
        ("hardware", hardware),
        (
            "parallel",
            f"tensor {result.tensor_parallel}, pipeline {result.pipeline_parallel}, "
            f"data {result.data_parallel}",
        ),
        ("max-model-len", str(result.max_model_len)),
        (
            "KV cache",
            f"{result.kv_cache_tokens:,} tokens, {result.concurrent_sequences:.1f} full-length sequences",
        ),
    ]
    if result.decode_tokens_per_s:
        rows.append(("decode", f"at most {result.decode_tokens_per_s:.0f} tok/s for one stream"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _template_summary(result: Plan, table: Table) -> Table:
    where = f"{result.instance_type}" if result.instance_type else "your own nodes"
    table.add_row("model", "your pod template (inference.template), run as written")
    table.add_row("hardware", f"{result.total_nodes} x {where}, one pod each")
    return table


def _memory(result: Plan) -> Table:
    m = result.memory
    table = Table(title="memory per GPU (GiB)")
    for column in ("GPU", "usable", "weights", "KV cache", "overhead", "total"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{m.gpu_memory_gib:.2f}",
        f"{m.usable_gib:.2f}",
        f"{m.weights_gib:.2f}",
        f"{m.kv_cache_gib:.2f}",
        f"{m.overhead_gib:.2f}",
        f"{m.total_gib:.2f}",
    )
    return table


def _print(result: Plan, others: list[Plan]) -> None:
    console.print(_summary(result))
    console.print()
    for line in result.explanation:
        if line not in result.notes:
            console.print(f"• {line}", highlight=False)
    for note in result.notes:
        console.print(f"[bold yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if not result.preset:
        return
    if result.gpus_per_node:
        console.print()
        console.print(_memory(result))
    console.print()
    console.print("[bold]engine arguments[/]")
    console.print(shlex.join(to_argv(result.engine_args)), highlight=False, soft_wrap=True)
    if others:
        table = Table(title="other instance types that fit (smallest first)")
        for column in ("instance type", "nodes", "GPUs", "parallel", "max-model-len"):
            table.add_column(column)
        for o in others:
            table.add_row(
                o.instance_type,
                str(o.node_count),
                str(o.total_gpus),
                f"TP {o.tensor_parallel} PP {o.pipeline_parallel} DP {o.data_parallel}",
                str(o.max_model_len),
            )
        console.print()
        console.print(table)


def plan_cmd(
    preset: Annotated[
        str | None, typer.Argument(help="A preset, an org/model Hugging Face id, or a local model directory.")
    ] = None,
    instance_type: Annotated[
        str | None, typer.Option("--instance-type", "-i", help="The machine type.")
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option("--max-model-len", help="Context length; chosen from KV capacity when omitted."),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", help="Exactly this many nodes.")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="vllm, transformers or llamacpp.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A Workspace YAML file.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="inference_config.yaml (or a ConfigMap holding it).")
    ] = None,
    output: OutputOption = OutputFormat.table,
    download_gbps: Annotated[
        float, typer.Option("--download-gbps", min=0.001, help="Hub bandwidth for the cold-start estimate.")
    ] = 1.0,
    disk_gibs: Annotated[
        float, typer.Option("--disk-gibs", min=0.001, help="Node disk read rate for the cold-start estimate.")
    ] = 1.0,
    cpu: Annotated[
        bool, typer.Option("--cpu", help="Size PRESET (or a pulled model) for llama.cpp on this machine.")
    ] = False,
) -> None:
    """Size a model: GPUs, nodes, parallelism, context, memory and engine arguments, explained."""
    if cpu:
        from pykaito.cli.models_cmds import plan_cpu

        plan_cpu(preset or "", output)
        return
    if (preset is None) == (file is None):
        raise InputError("give a PRESET or -f workspace.yaml (one of them)")
    catalog = load_catalog()
    overrides = _read_config(config) if config is not None else None
    if file is not None:
        result = _plan_file(file, overrides, catalog)
    else:
        model = resolve_model(preset or "", catalog)
        result = plan_preset(
            model,
            instance_type,
            max_model_len=max_model_len,
            count=count,
            catalog=catalog,
            runtime=runtime,
            config=overrides,
        )
    others = _alternatives(result, catalog, max_model_len)
    known = catalog.find_preset(result.preset)
    files_gib = (
        known.size_gib
        if known is not None
        else result.memory.weights_gib * result.tensor_parallel * result.pipeline_parallel
    )
    start = cold_start(
        files_gib,
        download_gbps,
        disk_gibs,
    )
    if output is not OutputFormat.table:
        data = plan_to_dict(result)
        data["alternatives"] = [
            {
                "instance_type": o.instance_type,
                "node_count": o.node_count,
                "total_gpus": o.total_gpus,
                "max_model_len": o.max_model_len,
            }
            for o in others
        ]
        data["cold_start"] = {
            "download_s": round(start.download_s, 1),
            "read_s": round(start.read_s, 1),
            "download_gbps": download_gbps,
            "disk_gibs": disk_gibs,
        }
        if result.runtime in CACHED_RUNTIMES:
            pvc = cache_name(result.model_id, result.model_revision or DEFAULT_REVISION)
            data["weight_cache"] = {
                "pvc": pvc,
                "size_gib": cache_size_gib(result),
                "first_start_s": round(start.cold_s, 1),
                "later_starts_s": round(start.read_s, 1),
            }
        emit(data, output)
        return
    _print(result, others)
    console.print()
    console.print("[bold]cold start[/] (on paper)")
    for line in start.lines():
        console.print(f"• {line}", highlight=False)
    if result.runtime in CACHED_RUNTIMES:
        pvc = cache_name(result.model_id, result.model_revision or DEFAULT_REVISION)
        console.print(
            f"• with the chart's weightCache.enabled: PersistentVolumeClaim {pvc} "
            f"({cache_size_gib(result)} GiB) is filled once by a download Job ({start.cold_s:.0f} s); every "
            f"later pod start, restart or replica reads it ({start.read_s:.0f} s at the disk rate)",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("plan")(plan_cmd)
