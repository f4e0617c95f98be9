"""The rules on ``resource.partition``: GPU partitions on bring-your-own nodes.

``mig`` runs the model on one NVIDIA MIG slice named by ``profile``; ``accelerator`` gives it
``count`` whole GPUs of a node. As upstream, partitions need the user's own nodes (no instance
type to provision), the profile must be a known MIG profile, and a MIG slice must hold the
model's weights unless the bypass annotation is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pykaito.api.types import ANNOTATION_BYPASS_RESOURCE_CHECKS, PartitionSpec, Workspace
from pykaito.catalog.loader import Catalog
from pykaito.catalog.mig import gpus_offering, known_profiles, mig_gpu, parse_profile
from pykaito.catalog.nodes import describe_node, node_labels, node_matches, node_name
from pykaito.catalog.types import ModelPreset
from pykaito.errors import FieldError

PATH = "resource.partition"
BYPASS_HINT = f'or set the annotation {ANNOTATION_BYPASS_RESOURCE_CHECKS}: "True" to skip this check'


def check_partition(
    ws: Workspace,
    partition: PartitionSpec,
    preset: ModelPreset | None,
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]] | None,
) -> list[FieldError]:
    """Every rule ``partition`` breaks; ``nodes`` (when known) are checked for the profile or count."""
    errors: list[FieldError] = []
    if ws.resource is not None and ws.resource.instanceType:
        errors.append(
            FieldError(
                PATH,
                "GPU partitions run on your own nodes: remove resource.instanceType and select the "
                "nodes with resource.labelSelector",
            )
        )
    if preset is not None and preset.cpu_only:
        errors.append(FieldError(PATH, f"{preset.name} runs on CPU and uses no GPU partition: remove it"))
        return errors
    if partition.mode == "mig":
        errors += _check_mig(ws, partition, preset, catalog, nodes)
    else:
        errors += _check_accelerator(ws, partition, catalog, nodes)
    return errors


def _matching(ws: Workspace, nodes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    selector = ws.resource.labelSelector if ws.resource is not None else None
    wanted = selector.model_dump(exclude_none=True) if selector is not None else {}
    return [n for n in nodes if isinstance(n, Mapping) and node_matches(wanted, node_labels(n))]


def _check_mig(
    ws: Workspace,
    partition: PartitionSpec,
    preset: ModelPreset | None,
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]] | None,
) -> list[FieldError]:
    errors: list[FieldError] = []
    if partition.count is not None:
        errors.append(
            FieldError(f"{PATH}.count", "count is for mode accelerator; a MIG workload takes one slice")
        )
    if not partition.profile:
        return [
            *errors,
            FieldError(f"{PATH}.profile", "required for mode mig: name a MIG profile such as 1g.10gb"),
        ]
    try:
        profile = parse_profile(partition.profile)
    except ValueError as exc:
        return [*errors, FieldError(f"{PATH}.profile", str(exc))]
    if not gpus_offering(profile.name):
        return [
            *errors,
            FieldError(
                f"{PATH}.profile",
                f"unknown MIG profile {profile.name!r}: use one of {', '.join(known_profiles())}",
            ),
        ]
    bypass = ws.annotation(ANNOTATION_BYPASS_RESOURCE_CHECKS) is not None
    if preset is not None and not bypass and preset.size_gib > profile.memory_gib:
        errors.append(
            FieldError(
                PATH,
                f"{preset.name} needs {preset.size_gib:.1f} GiB for its weights; a {profile.name} slice "
                f"has {profile.memory_gib:.1f} GiB: use a larger profile, {BYPASS_HINT}",
            )
        )
    for node in _matching(ws, nodes or []):
        described = describe_node(node, catalog)
        if not described.has_gpu:
            continue
        gpu = mig_gpu(described.gpu_model, described.per_gpu_memory_gib)
        offering = gpus_offering(profile.name)
        if gpu is not None and gpu not in offering:
            errors.append(
                FieldError(
                    f"{PATH}.profile",
                    f"node {node_name(node)} has {described.gpu_model} GPUs, which offer no "
                    f"{profile.name} slice ({', '.join(offering)} do): pick a profile of that GPU",
                )
            )
            break
    return errors


def _check_accelerator(
    ws: Workspace,
    partition: PartitionSpec,
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]] | None,
) -> list[FieldError]:
    errors: list[FieldError] = []
    if partition.profile:
        errors.append(
            FieldError(f"{PATH}.profile", "profile is for mode mig; mode accelerator takes count: remove it")
        )
    if partition.count is None:
        return [
            *errors,
            FieldError(f"{PATH}.count", "required for mode accelerator: the GPUs to use, 1 or more"),
        ]
    if partition.count < 1:
        return [*errors, FieldError(f"{PATH}.count", f"{partition.count} GPUs: use 1 or more")]
    for node in _matching(ws, nodes or []):
        described = describe_node(node, catalog)
        if described.has_gpu and described.gpu_count < partition.count:
            errors.append(
                FieldError(
                    f"{PATH}.count",
                    f"{partition.count} GPUs asked for, node {node_name(node)} has "
                    f"{described.gpu_count}: lower count or select larger nodes",
                )
            )
            break
    return errors
