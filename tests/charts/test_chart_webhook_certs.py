"""The webhook certificate for GitOps: an existing Secret and its CA make every render the same."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.charts.test_chart import by_kind, check_chart, helm, one

pytestmark = pytest.mark.slow
__all__ = ["helm"]  # the fixture, shared with test_chart.py
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
GITOPS = ("webhook.existingSecret=webhook-tls", f"webhook.caBundle={CA}")


def test_an_existing_secret_renders_the_same_every_time(helm: Path) -> None:
    first, second = check_chart.template(helm, GITOPS), check_chart.template(helm, GITOPS)
    assert first == second
    assert not by_kind(first, "Secret") and not by_kind(first, "Certificate")
    webhook = one(first, "ValidatingWebhookConfiguration")
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == CA
    assert "annotations" not in webhook["metadata"]
    volumes = one(first, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-cert", "secret": {"secretName": "webhook-tls"}} in volumes
    check_chart.lint(helm, GITOPS)
    assert check_chart.validate_objects(first) == []


def test_the_generated_certificate_changes_on_each_offline_render(helm: Path) -> None:
    """Why existingSecret exists: without a cluster to look the Secret up, each render makes a new CA."""
    bundles = {
        one(check_chart.template(helm), "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"][
            "caBundle"
        ]
        for _ in range(2)
    }
    assert len(bundles) == 2


def test_an_existing_secret_without_its_ca_is_refused_with_the_reason(helm: Path) -> None:
    with pytest.raises(RuntimeError, match=r"webhook.caBundle is required with webhook.existingSecret"):
        check_chart.template(helm, ["webhook.existingSecret=webhook-tls"])
