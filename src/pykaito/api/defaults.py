"""Defaults a Workspace gets on admission, as upstream KAITO applies them.

- ``metadata.namespace``: the namespace it is created in (``default`` when none is given);
- ``resource.count`` stays unset when not given: the planner then chooses the node count, and an
  explicit count is honoured (or refused with the reason) instead of being indistinguishable from 1;
- annotation ``kaito.sh/runtime``: ``vllm``, or the preset's own runtime when the preset runs only
  on another (``llamacpp`` for CPU presets).

:func:`apply_defaults` is pure: it returns a new Workspace and leaves its argument untouched.
"""

from __future__ import annotations

from pykaito.api.types import ANNOTATION_RUNTIME, Runtime, Workspace
from pykaito.catalog.loader import Catalog, load_catalog

DEFAULT_NAMESPACE = "default"


def default_runtime(workspace: Workspace, catalog: Catalog | None = None) -> str:
    """The runtime a Workspace runs when its annotation does not name one."""
    name = workspace.preset_name
    if name:
        preset = (catalog or load_catalog()).find_preset(name)
        if preset is not None and Runtime.VLLM.value not in preset.runtimes:
            return preset.default_runtime
    return Runtime.VLLM.value


def runtime_of(workspace: Workspace, catalog: Catalog | None = None) -> str:
    """The runtime a Workspace asks for: its annotation, or the default."""
    return workspace.annotation(ANNOTATION_RUNTIME) or default_runtime(workspace, catalog)


def apply_defaults(
    workspace: Workspace, namespace: str | None = None, catalog: Catalog | None = None
) -> Workspace:
    """A copy of ``workspace`` with the defaults filled in; values already set are kept."""
    meta_update: dict[str, object] = {}
    if not workspace.metadata.namespace:
        meta_update["namespace"] = namespace or DEFAULT_NAMESPACE
    annotations = dict(workspace.metadata.annotations or {})
    if workspace.inference is not None and ANNOTATION_RUNTIME not in annotations:
        annotations[ANNOTATION_RUNTIME] = default_runtime(workspace, catalog)
        meta_update["annotations"] = annotations
    update: dict[str, object] = {}
    if meta_update:
        update["metadata"] = workspace.metadata.model_copy(update=meta_update, deep=True)
    return workspace.model_copy(update=update, deep=True) if update else workspace.model_copy(deep=True)
