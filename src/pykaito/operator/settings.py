"""Operator settings: one dataclass tree with defaults, filled from the environment in the entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from pykaito.errors import InputError
from pykaito.manifests.benchmark import BenchmarkSettings
from pykaito.manifests.weight_cache import WeightCacheSettings

ENV_PREFIX = "KAITO_OPERATOR_"


@dataclass(frozen=True)
class WebhookSettings:
    """The validating admission webhook: where it listens and which certificate it serves."""

    enabled: bool = False
    port: int = 9443
    addr: str | None = None  # the address to listen on (None: every interface)
    host: str | None = None  # the name the API server uses to reach the webhook (Service DNS name)
    certfile: str | None = None  # tls.crt from the mounted secret
    pkeyfile: str | None = None  # tls.key from the mounted secret
    cafile: str | None = None  # ca.crt, reported as the webhook's caBundle
    insecure: bool = False  # plain HTTP (for tests and local tunnels only)
    reload_seconds: float = 10.0  # how often the certificate files are re-read (renewals, no restart)


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
    api_timeout_seconds: float = 30.0  # deadline of one request to the API server
    peering_lifetime_seconds: int = 15  # with --peering: how soon a silent replica is taken over from
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    weight_cache_enabled: bool = False  # download weights once per model revision into a PVC
    weight_cache_storage_class: str = ""  # "" uses the cluster's default storage class
    weight_cache_size: str = ""  # a quantity for every cache; "" sizes each from its model
    weight_cache_access_mode: str = "ReadWriteMany"
    weight_cache_image: str = ""  # the downloader's image; "" runs the CPU runtime image
    weight_cache_gc_grace: str = "24h"  # how long an unused cache is kept: s, m, h or d
    weight_cache_gc_interval_seconds: float = 60.0  # how often caches are checked for use
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)  # KAITO_OPERATOR_BENCHMARK_*

    def image_overrides(self) -> dict[str, str]:
        """Runtime images set by the deployment, by runtime (vllm, transformers, cpu)."""
        images = {
            "vllm": self.runtime_image_vllm,
            "transformers": self.runtime_image_transformers,
            "cpu": self.runtime_image_cpu,
        }
        return {runtime: image for runtime, image in images.items() if image}

    def weight_cache_settings(self) -> WeightCacheSettings:
        """How caches are made (InputError for a size, access mode or grace period that would not work)."""
        duration_seconds(self.weight_cache_gc_grace, f"{ENV_PREFIX}WEIGHT_CACHE_GC_GRACE")
        return WeightCacheSettings(
            storage_class=self.weight_cache_storage_class,
            size=self.weight_cache_size,
            access_mode=self.weight_cache_access_mode,
            image=self.weight_cache_image or self.runtime_image_cpu,
        )

    @property
    def weight_cache_gc_grace_seconds(self) -> float:
        """The grace period in seconds (InputError when it is not NUMBER plus s, m, h or d)."""
        return duration_seconds(self.weight_cache_gc_grace, f"{ENV_PREFIX}WEIGHT_CACHE_GC_GRACE")

    def wait_delay(self, retry: int) -> float:
        """Exponential backoff for "not yet": initial x 2^retry, capped."""
        return float(min(self.wait_max_seconds, self.wait_initial_seconds * 2 ** max(0, retry)))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str, name: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) as seconds."""
    raw = text.strip()
    try:
        if raw and raw[-1] in _UNITS:
            return float(raw[:-1]) * _UNITS[raw[-1]]
        return float(raw)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a duration such as 90s, 30m, 24h or 7d") from None


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
        if is_dataclass(default):
            values[f.name] = _fill(type(default), env, f"{name}_")
        elif name in env:
            values[f.name] = _convert(env[name], default, name)
    return cls(**values)


def settings_from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``KAITO_OPERATOR_*`` variables (``KAITO_OPERATOR_WEBHOOK_PORT`` for nested ones)."""
    env = os.environ if env is None else env
    prefix = f"{ENV_PREFIX}BENCHMARK_"  # filled from the chart's benchmark: block, key by key
    known = {f"{prefix}{f.name.upper()}" for f in fields(BenchmarkSettings)}
    for name in sorted(k for k in env if k.startswith(prefix) and k not in known):
        raise InputError(
            f"{name} is not a benchmark setting (a misspelt key in the chart's benchmark: values?); "
            f"known: {', '.join(sorted(known))}"
        )
    result: OperatorSettings = _fill(OperatorSettings, env, ENV_PREFIX)
    return result
