"""The post-load benchmark Job of a Workspace: `kaito bench` against its Service, bounded in time.

The Job runs the CPU runtime image (it holds the ``kaito`` command) once, never retried: a
concurrency sweep of short steps against ``http://<workspace>.<namespace>.svc``, stopping when the
throughput stops growing. Its container writes the few figures the Workspace's status records to
its termination message, where the operator reads them; no pod log access and no API rights are
needed. Owned by the Workspace, so deleting the Workspace deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pykaito.api.types import LABEL_WORKSPACE_NAMESPACE, Workspace
from pykaito.errors import InputError
from pykaito.manifests.images import Images
from pykaito.manifests.meta import ANNOTATION_API_KEY_SECRET, API_KEY_SECRET_KEY, dns_label, object_meta

LABEL_BENCHMARK = "kaito.sh/benchmark"
"""On the Job's pods (the Workspace's name): finds them without counting them as serving pods."""
ANNOTATION_DISABLE_BENCHMARK = "kaito.sh/disable-benchmark"
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class BenchmarkSettings:
    """How hard and how long the post-load benchmark pushes (the chart's ``benchmark:`` values).

    Each step of the sweep (concurrency 1, 2, 4 ... up to ``max_concurrency``) lasts
    ``step_seconds``, or ``step_requests`` requests when that is set and comes first.
    ``enabled`` false: no Workspace is benchmarked (the annotation turns off one).
    """

    enabled: bool = True
    max_concurrency: int = 16
    step_seconds: int = 15
    step_requests: int = 0  # 0: steps end by time only
    input_tokens: int = 256
    output_tokens: int = 128
    reference_concurrency: int = 4
    request_timeout_seconds: int = 120
    deadline_seconds: int = 900

    def __post_init__(self) -> None:
        least = {
            "maxConcurrency": (self.max_concurrency, 1),
            "stepSeconds": (self.step_seconds, 1),
            "stepRequests": (self.step_requests, 0),
            "inputTokens": (self.input_tokens, 1),
            "outputTokens": (self.output_tokens, 1),
            "referenceConcurrency": (self.reference_concurrency, 1),
            "requestTimeoutSeconds": (self.request_timeout_seconds, 1),
            "deadlineSeconds": (self.deadline_seconds, 1),
        }
        for name, (value, minimum) in least.items():
            if value < minimum:
                raise InputError(
                    f"benchmark.{name} is {value}: it must be at least {minimum} (set it in the chart values)"
                )


def benchmark_enabled(workspace: Workspace) -> bool:
    """Upstream's rule: on for inference Workspaces unless kaito.sh/disable-benchmark is "true"."""
    return workspace.inference is not None and workspace.annotation(ANNOTATION_DISABLE_BENCHMARK) != "true"


def benchmark_job_name(workspace: Workspace) -> str:
    return dns_label(workspace.name, "benchmark")


def benchmark_command(workspace: Workspace, settings: BenchmarkSettings) -> list[str]:
    s = settings
    url = f"http://{workspace.name}.{workspace.namespace}.svc"
    return [
        "kaito", "bench", url,
        "--max-concurrency", str(s.max_concurrency),
        "--duration", f"{s.step_seconds}s",
        "--input-tokens", str(s.input_tokens),
        "--output-tokens", str(s.output_tokens),
        "--reference-concurrency", str(s.reference_concurrency),
        "--timeout", str(s.request_timeout_seconds),
        "--status-file", TERMINATION_LOG,
    ] + (["--requests", str(s.step_requests)] if s.step_requests else [])  # fmt: skip


def render_benchmark_job(
    workspace: Workspace, images: Images | None = None, settings: BenchmarkSettings | None = None
) -> dict[str, Any]:
    """The batch/v1 Job that measures ``workspace`` once."""
    images = images or Images()
    settings = settings or BenchmarkSettings()
    name = benchmark_job_name(workspace)
    meta = object_meta(workspace, name)
    meta["labels"][LABEL_WORKSPACE_NAMESPACE] = workspace.namespace
    container: dict[str, Any] = {
        "name": "benchmark",
        "image": images.cpu,
        "imagePullPolicy": images.pull_policy,
        "command": benchmark_command(workspace, settings),
        "env": [{"name": "KAITO_HOME", "value": "/tmp/kaito"}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    }
    secret = workspace.annotation(ANNOTATION_API_KEY_SECRET)
    if secret:
        key_ref = {"secretKeyRef": {"name": secret, "key": API_KEY_SECRET_KEY}}
        container["env"].append({"name": API_KEY_SECRET_KEY, "valueFrom": key_ref})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "template": {
                "metadata": {"labels": {LABEL_BENCHMARK: workspace.name}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
