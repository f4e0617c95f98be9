"""The InferenceSet resource, kaito.sh/v1beta1 (also served as v1alpha1): replicas of a Workspace.

An InferenceSet keeps ``spec.replicas`` Workspaces made from ``spec.template`` (``resource`` and
``inference``, the Workspace's own fields), each named ``<set>-<n>``. It has a ``/scale`` subresource
(``spec.replicas``, ``status.replicas``, ``status.selector``) so that ``kubectl scale`` and KEDA can
drive it. Field names mirror the wire format, as for the Workspace.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pykaito.api.types import (
    GROUP,
    Condition,
    InferenceSpec,
    LabelSelector,
    ObjectMeta,
)

IS_KIND = "InferenceSet"
IS_PLURAL = "inferencesets"
IS_SHORT_NAMES = ("is", "isets")
IS_VERSION = "v1beta1"
IS_API_VERSION = f"{GROUP}/{IS_VERSION}"
IS_SERVED_VERSIONS = ("v1beta1", "v1alpha1")
IS_FINALIZER = "inferenceset.finalizer.kaito.sh"
LABEL_CREATED_BY = "inferenceset.kaito.sh/created-by"
"""On every child Workspace (and its pods): the name of the InferenceSet that owns it."""
ANNOTATION_TEMPLATE_HASH = "inferenceset.kaito.sh/template-hash"
"""On every child Workspace: the hash of the template it was made from (a rollout compares it)."""
DEFAULT_REPLICAS = 1
DEFAULT_MAX_UNAVAILABLE = 1

# KEDA autoscaling, configured by annotations on the InferenceSet (upstream's names).
SCALER_PREFIX = "scaledobject.kaito.sh/"
ANNOTATION_AUTO_PROVISION = SCALER_PREFIX + "auto-provision"
ANNOTATION_METRIC_NAME = SCALER_PREFIX + "metricName"
ANNOTATION_THRESHOLD = SCALER_PREFIX + "threshold"
ANNOTATION_MIN_REPLICAS = SCALER_PREFIX + "min-replicas"
ANNOTATION_MAX_REPLICAS = SCALER_PREFIX + "max-replicas"
ANNOTATION_SCALE_UP_COOLDOWN = SCALER_PREFIX + "scale-up-cooldown"
ANNOTATION_SCALE_DOWN_COOLDOWN = SCALER_PREFIX + "scale-down-cooldown"
ANNOTATION_ACTIVATION_THRESHOLD = SCALER_PREFIX + "activation-threshold"
DEFAULT_METRIC_NAME = "vllm:num_requests_waiting"


class SetConditionType(StrEnum):
    READY = "InferenceSetReady"
    DELETING = "InferenceSetDeleting"
    SCALED_TO_ZERO = "ScaledToZero"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PartitionSpec(_Strict):
    """GPU partitioning for each replica (MIG); passed on to every child Workspace."""

    mode: str | None = None
    profile: str | None = None


class SetResourceSpec(_Strict):
    instanceType: str | None = None
    partition: PartitionSpec | None = None


class SetTemplate(_Strict):
    metadata: dict[str, Any] | None = Field(
        default=None, description="Labels and annotations given to every child Workspace."
    )
    resource: SetResourceSpec | None = None
    inference: InferenceSpec


class RollingUpdate(BaseModel):
    model_config = ConfigDict(extra="allow")

    maxUnavailable: int | str | None = None
    partition: int | None = None


class UpdateStrategy(BaseModel):
    """As a StatefulSet's: ``RollingUpdate`` (the default) with ``maxUnavailable``, or ``OnDelete``."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    rollingUpdate: RollingUpdate | None = None


class MaintenanceWindow(_Strict):
    schedule: str
    duration: str | None = None


class AutoUpgradePolicy(_Strict):
    enabled: bool | None = None
    strategy: Literal["InPlace", "Surge"] | None = None
    maintenanceWindow: MaintenanceWindow | None = None


class InferenceSetSpec(_Strict):
    template: SetTemplate
    replicas: int | None = Field(default=None, description="Desired number of Workspaces (default 1).")
    nodeCountLimit: int | None = Field(
        default=None, description="The most GPU nodes all replicas together may use (0 or unset: no limit)."
    )
    labelSelector: LabelSelector = Field(
        description="Labels given to every child Workspace's resource.labelSelector."
    )
    updateStrategy: UpdateStrategy | None = None
    autoUpgrade: AutoUpgradePolicy | None = None


class InferenceSetStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    replicas: int | None = None
    readyReplicas: int | None = None
    selector: str | None = None
    conditions: list[Condition] | None = None


class InferenceSet(_Strict):
    apiVersion: str = IS_API_VERSION
    kind: str = IS_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferenceSetSpec
    status: InferenceSetStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def replicas(self) -> int:
        return DEFAULT_REPLICAS if self.spec.replicas is None else self.spec.replicas

    def annotation(self, key: str) -> str | None:
        return (self.metadata.annotations or {}).get(key)

    def child_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    def max_unavailable(self) -> int:
        """Replicas a rollout may take out of service at once (at least 1)."""
        strategy = self.spec.updateStrategy
        value: int | str | None = None
        if strategy is not None and strategy.rollingUpdate is not None:
            value = strategy.rollingUpdate.maxUnavailable
        if value is None:
            return DEFAULT_MAX_UNAVAILABLE
        if isinstance(value, str) and value.endswith("%"):
            percent = int(value[:-1])
            return max(1, self.replicas * percent // 100)
        return max(1, int(value))
