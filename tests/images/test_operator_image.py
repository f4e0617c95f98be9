"""The operator image, run as the chart's Deployment runs it, against the emulated API server.

The container gets the Deployment's image, command, arguments, environment, user, read-only root
and volumes (the webhook's certificate as its Secret would mount it), and the operator's
ServiceAccount credentials as a kubeconfig. The emulator enforces the chart's RBAC. The webhook
listens on 127.0.0.1 (the container shares the host's network).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images import podman
from tests.netutil import free_port
from tests.operator import chart
from tests.operator.cluster import apply, condition, eventually, example, live
from tests.operator.conftest import emulated_cluster
from tests.operator.kube_emulator import WORKSPACES
from tests.operator.test_operator_process import review
from tests.operator.test_webhook_tls import HOST, admit, handshake_ok, make_secret

SEED = "workspace-phi-4-mini-h100"
KUBECONFIG = "/etc/pykaito/kubeconfig"


def deployment_pod(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def env_value(container: dict[str, Any], name: str) -> str:
    return str(next(e["value"] for e in container["env"] if e["name"] == name))


def secret_volume(directory: Path, kubeconfig: Path) -> Path:
    """The webhook's Secret as the kubelet mounts it (files readable by the pod's user, 0644), and
    the ServiceAccount's credentials readable too."""
    make_secret(directory, "webhook")
    for file in [*directory.iterdir(), kubeconfig]:
        file.chmod(0o644)
    return directory


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_operator_image_serves_health_metrics_webhook_and_reconciles(
    images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health, metrics, webhook = free_port(), free_port(), free_port()
    values = ("replicas=1", f"healthPort={health}", f"metrics.port={metrics}", f"webhook.port={webhook}")
    async with emulated_cluster(tmp_path, monkeypatch, *values) as kube:
        spec, container = deployment_pod(kube.manifests)
        assert container["image"] == images["operator"]  # the chart deploys what was built
        assert env_value(container, "KAITO_OPERATOR_WEBHOOK_HOST") == HOST
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "webhook-cert")
        kubeconfig = Path(os.environ["PYKAITO_TEST_OPERATOR_KUBECONFIG"])
        ca = secret_volume(tmp_path / "webhook-cert", kubeconfig) / "ca.crt"
        name = podman.container_name("operator")
        options = podman.run_args(
            spec,
            container,
            name=name,
            args=container["args"],
            env={"KUBECONFIG": KUBECONFIG, "KAITO_OPERATOR_WEBHOOK_ADDR": "127.0.0.1"},
            mounts={mount: str(ca.parent), KUBECONFIG: str(kubeconfig)},
        )
        log = tmp_path / "operator.log"
        try:
            async with podman.running(options, log) as process, httpx.AsyncClient(timeout=10.0) as http:

                async def healthy() -> bool:
                    if process.returncode is not None:
                        raise AssertionError(f"the container exited with {process.returncode}")
                    try:
                        return (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(healthy, timeout=300)

                # it reconciles: a Workspace gets its NodeClaim, under the chart's RBAC
                await apply(kube, example(f"{SEED}.yaml"))
                await eventually(
                    lambda: condition(live(kube, WORKSPACES, "default", SEED), "NodeClaimReady"), timeout=120
                )

                async def scraped() -> str | None:
                    text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
                    return text if 'kaito_workspaces{state="Pending"} 1.0' in text else None

                text = await eventually(scraped, timeout=120)
                assert "kaito_reconcile_duration_seconds_count" in text

                # the webhook answers an AdmissionReview over TLS with the Secret's certificate
                await eventually(lambda: handshake_ok(webhook, ca), timeout=120)
                bad = example(f"{SEED}.yaml")
                bad["metadata"] = {"name": "bad", "namespace": "default"}
                bad["inference"]["preset"]["name"] = "phi-5-giant"
                answer = await admit(webhook, ca, review(bad))
                assert answer["response"]["allowed"] is False
                assert "inference.preset.name" in answer["response"]["status"]["message"]
                good = example(f"{SEED}.yaml")
                good["metadata"]["namespace"] = "default"
                assert (await admit(webhook, ca, review(good)))["response"]["allowed"] is True

                await podman.signal_container(name, "TERM")
                await eventually(lambda: process.returncode is not None, timeout=60)
                assert process.returncode == 0, f"exit {process.returncode} after SIGTERM"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- container log ---\n{log.read_text()[-3000:]}") from exc
        operator = chart.operator_user(kube.manifests)
        assert kube.denied(operator) == [], kube.denied(operator)
        assert [a for a in kube.audit if a.user == operator.name], "the operator made no API request"
