"""Operator settings: one dataclass tree with defaults, filled from the environment in the entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pykaito.errors import InputError

ENV_PREFIX = "KAITO_OPERATOR_"


@dataclass(frozen=True)
class WebhookSettings:
    """The validating admission webhook: where it listens and which certificate it serves."""

    enabled: bool = False
    port: int = 9443
    host: str | None = None  # the name the API server uses to reach the webhook (Service DNS name)
    certfile: str | None = None  # tls.crt from the mounted secret
    pkeyfile: str | None = None  # tls.key from the mounted secret
    cafile: str | None = None  # ca.crt, reported as the webhook's caBundle
    insecure: bool = False  # plain HTTP (for tests and local tunnels only)


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator can be told; each field is also an environment variable.

    ``node_provisioning`` -> ``KAITO_OPERATOR_NODE_PROVISIONING``, and so on (upper-cased).
    """

    node_provisioning: bool = True
    node_class_group: str = "karpenter.azure.com"
    node_class_kind: str = "AKSNodeClass"
    node_class_name: str = "default"
    runtime_image_vllm: str = ""  # "" keeps the image pykaito.manifests.Images names for this version
    runtime_image_transformers: str = ""
    runtime_image_cpu: str = ""
    metrics_port: int = 8000  # 0 disables the metrics endpoint
    resync_seconds: float = 30.0  # how often every Workspace's status is re-read from the cluster
    wait_initial_seconds: float = 5.0  # first retry delay while nodes come up
    wait_max_seconds: float = 60.0  # the backoff's ceiling
    error_backoff_seconds: float = 2.0  # retry delay after an API failure
    webhook: WebhookSettings = field(default_factory=WebhookSettings)

    def image_overrides(self) -> dict[str, str]:
        """Runtime images set by the deployment, by runtime (vllm, transformers, cpu)."""
        images = {
            "vllm": self.runtime_image_vllm,
            "transformers": self.runtime_image_transformers,
            "cpu": self.runtime_image_cpu,
        }
        return {runtime: image for runtime, image in images.items() if image}

    def wait_delay(self, retry: int) -> float:
        """Exponential backoff for "not yet": initial x 2^retry, capped."""
        return float(min(self.wait_max_seconds, self.wait_initial_seconds * 2 ** max(0, retry)))


def _convert(raw: str, default: Any, name: str) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw or None if default is None else raw


def _fill(cls: type[Any], env: Mapping[str, str], prefix: str) -> Any:
    values: dict[str, Any] = {}
    defaults = cls()
    for f in fields(cls):
        default = getattr(defaults, f.name)
        name = f"{prefix}{f.name.upper()}"
        if isinstance(default, WebhookSettings):
            values[f.name] = _fill(WebhookSettings, env, f"{name}_")
        elif name in env:
            values[f.name] = _convert(env[name], default, name)
    return cls(**values)


def settings_from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``KAITO_OPERATOR_*`` variables (``KAITO_OPERATOR_WEBHOOK_PORT`` for nested ones)."""
    result: OperatorSettings = _fill(OperatorSettings, os.environ if env is None else env, ENV_PREFIX)
    return result
