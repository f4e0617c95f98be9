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
CATEGORIES = ("workspace",)

ANNOTATION_RUNTIME = "kaito.sh/runtime"
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
ANNOTATION_PERFORMANCE_MODE = "kaito.sh/performance-mode"
ANNOTATION_USE_LOCAL_WEIGHTS = "kaito.sh/use-local-weights"
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
ANNOTATION_NODE_CLASS_NAME = "kaito.sh/node-class-name"
ANNOTATION_DISABLE_BENCHMARK = "kaito.sh/disable-benchmark"
ANNOTATION_MODEL_STREAMING = "kaito.sh/model-streaming"
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
    MODEL_MIRROR_READY = "ModelMirrorReady"  # with the weight cache: the model's weights are cached


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


class PartitionSpec(_Strict):
    """GPU partitioning: ``mig`` runs on one MIG slice (``profile`` such as ``1g.10gb``);
    ``accelerator`` gives the workload ``count`` whole GPUs."""

    mode: Literal["mig", "accelerator"]
    profile: str | None = None
    count: int | None = Field(default=None, ge=1)


class ResourceSpec(_Strict):
    instanceType: str | None = None
    count: int | None = Field(default=None, description="Deprecated: the number of nodes.")
    labelSelector: LabelSelector | None = None
    preferredNodes: list[str] | None = Field(
        default=None, description="Deprecated: bring-your-own node names."
    )
    partition: PartitionSpec | None = None


class PresetOptions(_Strict):
    modelAccessSecret: str | None = None
    image: str | None = Field(default=None, description="Deprecated: the container image to run.")
    imagePullSecrets: list[str] | None = Field(
        default=None, description="Deprecated: Secrets for pulling the image."
    )


class PresetSpec(_Strict):
    name: str
    accessMode: Literal["public", "private"] | None = Field(
        default=None, description="Deprecated: public or private.", json_schema_extra={"default": "public"}
    )
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


class Metric(BaseModel):
    """One measured figure of the post-load benchmark: its value as a string, unit and settings."""

    description: str
    value: str
    unit: str | None = None
    config: dict[str, str] | None = None


CONDITION_BENCHMARK_COMPLETED = "BenchmarkCompleted"
"""The post-load benchmark's condition (as upstream): True once status.performance is recorded."""


class PerformanceMetric(StrEnum):
    """The names of status.performance.metrics: upstream's peak throughput, then pykaito's two."""

    PEAK_TOKENS_PER_MINUTE = "peakTokensPerMinute"
    TIME_TO_FIRST_TOKEN = "timeToFirstToken"  # ms, p50 at the reference concurrency
    TOKENS_PER_SECOND_PER_STREAM = "tokensPerSecondPerStream"  # at the reference concurrency


class Performance(BaseModel):
    """status.performance: the post-load benchmark's metrics by name (e.g. peakTokensPerMinute)."""

    metrics: dict[str, Metric] | None = None


class WorkspaceStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    workerNodes: list[str] | None = None
    state: str | None = None
    conditions: list[Condition] | None = None
    targetNodeCount: int | None = None
    performance: Performance | None = None


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
