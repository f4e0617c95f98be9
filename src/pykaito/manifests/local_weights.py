"""``kaito.sh/use-local-weights: "true"``: serve weights already on the node instead of downloading them.

As upstream KAITO documents it: the weights live on the node under ``/opt/kaito/models/<preset>``
(the preset name lowercased, ``/`` and ``\\`` turned into ``-``); that host directory is mounted
read-only at the same path in the inference container and given to the engine as ``--model``, and
the Hugging Face hub is switched off (``HF_HUB_OFFLINE=1``), so a pod start downloads nothing.
It applies to the GPU runtimes (vLLM, transformers); CPU presets run the model their image ships.
"""

from __future__ import annotations

from typing import Any

from pykaito.api.types import ANNOTATION_USE_LOCAL_WEIGHTS, Workspace
from pykaito.planner.types import Plan

LOCAL_WEIGHTS_ROOT = "/opt/kaito/models"
VOLUME = "local-weights"
_MODEL_FLAGS = ("--model", "--force-model")


def _segment(preset_name: str) -> str:
    segment = preset_name.strip().lower().replace("/", "-").replace("\\", "-")
    return "" if segment in ("", ".", "..") else segment


def local_weights_dir(workspace: Workspace, plan: Plan) -> str | None:
    """The node directory holding the preset's weights, when the Workspace opts in; else None."""
    if (
        workspace.annotation(ANNOTATION_USE_LOCAL_WEIGHTS) or ""
    ).strip().lower() != "true" or plan.runtime == "llamacpp":
        return None
    preset = workspace.inference.preset if workspace.inference else None
    segment = _segment(str(preset.name)) if preset is not None else ""
    return f"{LOCAL_WEIGHTS_ROOT}/{segment}" if segment else None


def model_args(workspace: Workspace, plan: Plan, argv: list[str]) -> list[str]:
    """``argv`` with the model given as the local directory instead of a Hugging Face id."""
    directory = local_weights_dir(workspace, plan)
    if directory is None:
        return argv
    result = list(argv)
    for i, arg in enumerate(result[:-1]):
        if arg in _MODEL_FLAGS:
            result[i + 1] = directory
            return result
    return ["--model", directory, *result]


def env(workspace: Workspace, plan: Plan) -> list[dict[str, Any]]:
    """The hub is off: the weights are all on the node."""
    if local_weights_dir(workspace, plan) is None:
        return []
    return [{"name": "HF_HUB_OFFLINE", "value": "1"}]


def volume_and_mount(workspace: Workspace, plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The node's weight directory as a read-only hostPath volume, at the same path in the container."""
    directory = local_weights_dir(workspace, plan)
    if directory is None:
        return [], []
    volume = {"name": VOLUME, "hostPath": {"path": directory, "type": "Directory"}}
    return [volume], [{"name": VOLUME, "mountPath": directory, "readOnly": True}]
