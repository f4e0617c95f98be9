"""``kaito pull``, ``kaito models``, ``kaito rm``: the local model store, and serving a pulled model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pykaito.catalog import load_catalog
from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
from pykaito.cli.output import OutputFormat, console, emit, err_console
from pykaito.cli.signals import sigterm_as_interrupt
from pykaito.errors import InputError, PykaitoError
from pykaito.models import ModelStore, StoredModel, parse_ref
from pykaito.models import pull as pull_model
from pykaito.models.host import available_memory
from pykaito.models.pull import GIB, REQUIRE_CHECKSUM_ENV, checksum_note, require_checksum_from_env
from pykaito.planner.local_cpu import LocalSizing, size_local

OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.0f} MiB"


def pull_with_progress(
    name: str,
    sha256: str | None = None,
    keep_free_gib: float = 1.0,
    require_checksum: bool | None = None,
) -> StoredModel:
    """Pull ``name`` into the store with a progress bar on stderr; say what was verified.

    ``require_checksum`` None means ``KAITO_REQUIRE_CHECKSUM`` decides.
    """
    ref = parse_ref(name, load_catalog(), sha256=sha256)
    strict = require_checksum_from_env() if require_checksum is None else require_checksum
    store = ModelStore()
    note = checksum_note(ref)
    if note is not None and not strict and store.find(ref.name) is None:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    interactive = err_console.is_terminal
    with Progress(*columns, console=err_console, transient=True, disable=not interactive) as progress:
        task = progress.add_task(f"pulling {ref.name}", total=None)

        def advance(done: int, total: int | None) -> None:
            if not interactive and progress.tasks[task].total is None:
                resumed = f", resuming at {_size(done)}" if done else ""
                err_console.print(f"pulling {ref.name}: {_size(total or 0)}{resumed}", highlight=False)
            progress.update(task, completed=done, total=total)

        model, downloaded = pull_model(
            ref, store, keep_free=int(keep_free_gib * GIB), progress=advance, require_checksum=strict
        )
    if not downloaded:
        err_console.print(f"{model.name} is already pulled ({model.path})", highlight=False)
        return model
    whose = {
        "catalog": "the catalog's verified",
        "given": "the given",
        "hub": "the hub's",
        "catalog-unverified": "the catalog's unverified",
    }.get(model.checked, "")
    agrees = " (the catalog's unverified one agrees)" if ref.checksum == "unverified" and whose else ""
    verdict = (
        f"sha256 {model.sha256[:12]}… matches {whose} checksum{agrees}"
        if whose
        else f"no published checksum, size checked: recorded sha256 {model.sha256} "
        "(pass --sha256 to check one)"
    )
    err_console.print(
        f"pulled {model.name}: {_size(model.size)} {model.quantization} → {model.path}; {verdict}",
        highlight=False,
        soft_wrap=True,
    )
    return model


def embedded_model() -> StoredModel:
    """The model shipped with pykaito, described like a pulled one (it is never in the store)."""
    path = embedded_gguf_path()
    preset = load_catalog().preset(EMBEDDED_PRESET)
    return StoredModel(
        name=EMBEDDED_PRESET,
        file=path.name,
        path=path,
        size=path.stat().st_size,
        sha256=preset.cpu_gguf.sha256 or "" if preset.cpu_gguf else "",
        quantization="Q4_1",
        source="embedded",
        preset=EMBEDDED_PRESET,
    )


def local_model(name: str, pull_first: bool = False) -> StoredModel:
    """The pulled model called ``name`` (or the embedded one); pulled now when ``pull_first``."""
    store = ModelStore()
    found = store.find(name)
    if found is None and name == EMBEDDED_PRESET and not pull_first:
        return embedded_model()
    if found is None and pull_first:
        found = pull_with_progress(name)
    if found is None:
        found = store.get(name)  # raises with the closest names and what to run
    return store.touch(found)


def local_sizing(model: StoredModel, parallel: int | None) -> LocalSizing:
    """Parallel slots (unless given) and context per slot for ``model``, from free memory and its KV size."""
    preset = load_catalog().find_preset(model.preset) if model.preset else None
    kv = model.kv_bytes_per_token or (preset.kv_bytes_per_token if preset else None) or 128 * 1024
    context = model.context_length or (preset.context_length if preset else None) or 4096
    return size_local(
        name=model.name,
        weights_bytes=model.size,
        kv_bytes_per_token=kv,
        context_length=context,
        free_bytes=available_memory(),
        parallel=parallel,
    )


Q4_K_M_BITS_PER_PARAM = 4.85  # llama.cpp's Q4_K_M averages about 4.85 bits per weight


def _planned_model(name: str) -> tuple[StoredModel, str]:
    """What `kaito plan NAME --cpu` sizes: the pulled model, else the catalog's GGUF as it would be pulled."""
    store = ModelStore()
    found = store.find(name)
    if found is not None:
        return found, f"pulled: {found.path}"
    if name == EMBEDDED_PRESET:
        return embedded_model(), "shipped with pykaito"
    ref = parse_ref(name, load_catalog())
    preset = load_catalog().find_preset(ref.preset) if ref.preset else None
    size = ref.size
    note = f"not pulled yet: `kaito pull {name}` downloads it"
    if size is None and preset is not None and preset.params_billion:
        size = int(preset.params_billion * 1e9 * Q4_K_M_BITS_PER_PARAM / 8)
        note += " (size estimated at 4.85 bits per parameter)"
    if size is None:
        raise InputError(f"{name}: its size is unknown until it is pulled; run `kaito pull {name}` first")
    model = StoredModel(
        name=ref.name,
        file=ref.file,
        path=store.directory(ref.name) / ref.file,
        size=size,
        sha256=ref.sha256 or "",
        quantization=ref.quantization,
        source=ref.kind,
        repo=ref.repo,
        preset=ref.preset,
    )
    return model, note


def plan_cpu(name: str, output: OutputFormat) -> None:
    """`kaito plan NAME --cpu`: slots and context for llama.cpp here, from free memory, explained."""
    if not name:
        raise InputError("kaito plan --cpu needs a NAME: a preset or a pulled model")
    model, note = _planned_model(name)
    sizing = local_sizing(model, None)
    if output is not OutputFormat.table:
        emit(
            {
                "model": model.name,
                "quantization": model.quantization,
                "weights_bytes": sizing.weights_bytes,
                "free_bytes": sizing.free_bytes,
                "reserve_bytes": sizing.reserve_bytes,
                "kv_bytes": sizing.kv_bytes,
                "parallel": sizing.parallel,
                "context_per_slot": sizing.context_per_slot,
                "ctx_size": sizing.ctx_size,
                "explanation": list(sizing.explanation),
            },
            output,
        )
        return
    console.print(f"[bold]{model.name}[/] {model.quantization} on this machine's CPU (llama.cpp); {note}")
    for line in sizing.explanation:
        console.print(f"  {line}", highlight=False)
    console.print(
        f"kaito serve {name} runs it with --parallel {sizing.parallel} --ctx-size {sizing.ctx_size}",
        highlight=False,
    )


def runtime_args(model: str | None, pull_first: bool) -> tuple[Path | None, str, int, int]:
    """For `kaito up`/`kaito chat --model`: the GGUF path, served name, parallel slots and KV tokens."""
    if model is None:
        if pull_first:
            raise InputError("--pull needs --model NAME: the model to pull")
        return None, "", 8, 0
    path = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or ("/" not in model and ":" not in model)
    if path.is_file() or (model.endswith(".gguf") and looks_like_path):
        if not path.is_file():
            raise InputError(
                f"--model {model}: no such file; give the path of a .gguf model or a pulled model"
            )
        return path, "", 8, 0
    pulled = local_model(model, pull_first=pull_first)
    sizing = local_sizing(pulled, None)
    return pulled.path, pulled.name, sizing.parallel, sizing.ctx_size


def pull_cmd(
    name: Annotated[
        str,
        typer.Argument(
            help="A preset (kaito presets), a Hugging Face ORG/REPO[:FILE.gguf], or an https URL."
        ),
    ],
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Refuse the file unless its SHA-256 is this.")
    ] = None,
    keep_free_gib: Annotated[
        float,
        typer.Option("--keep-free-gib", min=0.0, help="GiB of disk that must stay free after the pull."),
    ] = 1.0,
    require_checksum: Annotated[
        bool,
        typer.Option(
            "--require-checksum",
            envvar=REQUIRE_CHECKSUM_ENV,
            help="Refuse, before downloading, a model whose SHA-256 is not verified in the catalog "
            "and not given with --sha256 (the hub's own checksum alone is not enough).",
        ),
    ] = False,
) -> None:
    """Download a GGUF model into the local store (resumes, checks its checksum and the free disk first).

    Uses HF_TOKEN or your `hf auth login` token for gated models, and HF_ENDPOINT for another hub.
    Ctrl-C (or SIGTERM) keeps the partial file: the next pull resumes it. Catalog checksums not
    verified from the file itself are said so, and the hub's own checksum must agree with them.
    """
    with sigterm_as_interrupt():
        pull_with_progress(
            name, sha256=sha256, keep_free_gib=keep_free_gib, require_checksum=require_checksum
        )


def _rows(models: list[StoredModel]) -> list[dict[str, object]]:
    return [
        {
            "name": m.name,
            "size": m.size,
            "quantization": m.quantization,
            "path": str(m.path),
            "source": m.repo or m.url,
            "sha256": m.sha256,
            "checked": m.checked or None,
            "pulled_at": m.pulled_at,
            "last_used": m.last_used or None,
        }
        for m in models
    ]


def models_cmd(output: OutputOption = OutputFormat.table) -> None:
    """List the pulled models: name, size, quantization, path and when each was last served."""
    store = ModelStore()
    models = store.models()
    if output is not OutputFormat.table:
        emit(_rows(models), output)
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("NAME", "SIZE", "QUANT", "LAST USED", "PATH"):
        table.add_column(column, no_wrap=column != "PATH")
    try:
        embedded = embedded_model()
        table.add_row(f"{embedded.name} (embedded)", _size(embedded.size), "Q4_1", "", str(embedded.path))
    except PykaitoError:
        pass
    for m in models:
        last = m.last_used.replace("T", " ").removesuffix("+00:00") if m.last_used else "never"
        table.add_row(m.name, _size(m.size), m.quantization or "?", last, str(m.path))
    console.print(table)
    if not models:
        console.print(f"no pulled models in {store.root}: try `kaito pull phi-4-mini-instruct`", style="dim")


def rm_cmd(name: Annotated[str, typer.Argument(help="A pulled model (kaito models lists them).")]) -> None:
    """Remove a pulled model and any partial download of it."""
    model = ModelStore().remove(name)
    console.print(f"removed {model.name} ({_size(model.size)} freed)", highlight=False)


models_app = typer.Typer(
    help="The local model store: without a command, list the pulled models (as `models list`).",
    invoke_without_command=True,
)


@models_app.callback()
def models_group(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """List the pulled models (without a subcommand), or pull, list and remove them."""
    if ctx.invoked_subcommand is None:
        models_cmd(output)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app: `kaito pull|rm` and the same under `kaito models`."""
    app.command("pull")(pull_cmd)
    app.command("rm")(rm_cmd)
    models_app.command("pull")(pull_cmd)
    models_app.command("list")(models_cmd)
    models_app.command("rm")(rm_cmd)
    app.add_typer(models_app, name="models")
