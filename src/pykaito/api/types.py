"""The Workspace resource, kaito.sh/v1beta1, as upstream KAITO defines it.

There is no ``spec``: ``resource``, ``inference`` and ``tuning`` sit at the top level. Field names
mirror the wire format (camelCase) so that a Workspace reads the same in Python and in YAML.
Unknown fields are rejected where the Kubernetes API server would prune or refuse them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "kaito.sh"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Workspace"
PLURAL = "workspaces"
SHORT_NAMES = ("wk", "wks")

ANNOTATION_RUNTIME = "kaito.sh/runtime"
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
FINALIZER = "workspace.finalizer.kaito.sh"
CONFIG_KEY = "inference_config.yaml"
MAX_ADAPTERS = 10


class ConditionType(StrEnum):
    NODE_CLAIM_READY = "NodeClaimReady"
    NODES_READY = "NodesReady"
    RESOURCE_READY = "ResourceReady"
    INFERENCE_READY = "InferenceReady"
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
    WORKSPACE_DELETING = "WorkspaceDeleting"


class State(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Runtime(StrEnum):
    VLLM = "vllm"
    TRANSFORMERS = "transformers"
    LLAMACPP = "llamacpp"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(BaseModel):
    """Kubernetes object metadata; fields set by the API server pass through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class LabelSelectorRequirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Strict):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None


class ResourceSpec(_Strict):
    instanceType: str | None = None
    count: int | None = Field(default=None, description="Deprecated: the number of nodes.")
    labelSelector: LabelSelector | None = None
    preferredNodes: list[str] | None = Field(
        default=None, description="Deprecated: bring-your-own node names."
    )


class PresetOptions(_Strict):
    modelAccessSecret: str | None = None


class PresetSpec(_Strict):
    name: str
    accessMode: Literal["public", "private"] | None = None
    presetOptions: PresetOptions | None = None


class AdapterSource(_Strict):
    name: str
    image: str | None = None
    imagePullSecrets: list[str] | None = None
    volumeSource: dict[str, Any] | None = None
    urls: list[str] | None = None


class AdapterSpec(_Strict):
    source: AdapterSource
    strength: str | None = None


class InferenceSpec(_Strict):
    preset: PresetSpec | None = None
    template: dict[str, Any] | None = None
    config: str | None = None
    adapters: list[AdapterSpec] | None = None


class TuningSpec(BaseModel):
    """Fine-tuning (not supported yet): kept permissive so it can be recognised and refused clearly."""

    model_config = ConfigDict(extra="allow")

    preset: PresetSpec | None = None
    method: str | None = None
    config: str | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None


class Condition(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class WorkspaceStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    workerNodes: list[str] | None = None
    state: str | None = None
    conditions: list[Condition] | None = None
    targetNodeCount: int | None = None


class Workspace(_Strict):
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec | None = None
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    def annotation(self, key: str) -> str | None:
        return (self.metadata.annotations or {}).get(key)

    @property
    def preset_name(self) -> str | None:
        if self.inference and self.inference.preset:
            return self.inference.preset.name
        return None
