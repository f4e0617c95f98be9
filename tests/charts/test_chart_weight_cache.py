"""The chart's weightCache values: off by default, and what the operator reads when on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykaito.operator.settings import settings_from_env
from tests.charts.test_chart import check_chart, cluster_rules, container_env, helm

pytestmark = pytest.mark.slow
__all__ = ["helm"]  # the fixture, shared with test_chart.py


def test_off_by_default_with_no_grants(helm: Path) -> None:
    objects = check_chart.template(helm)
    assert not settings_from_env(container_env(objects)).weight_cache_enabled
    rules = cluster_rules(objects)
    assert ("", "persistentvolumeclaims") not in rules and ("", "pods/log") not in rules
    assert "delete" not in rules[("batch", "jobs")]


def test_on_the_operator_reads_every_value(helm: Path) -> None:
    sets = [
        "weightCache.enabled=true",
        "weightCache.storageClass=azurefile-csi",
        "weightCache.accessMode=ReadWriteOnce",
        "weightCache.size=300Gi",
        "weightCache.gcGracePeriod=2h",
        "weightCache.downloaderImage.repository=registry.example/dl",
        "weightCache.downloaderImage.tag=v7",
    ]
    objects = check_chart.template(helm, sets)
    settings = settings_from_env(container_env(objects))
    assert settings.weight_cache_enabled and settings.weight_cache_gc_grace_seconds == 7200
    made = settings.weight_cache_settings()
    assert (made.storage_class, made.access_mode, made.size) == ("azurefile-csi", "ReadWriteOnce", "300Gi")
    assert made.image == "registry.example/dl:v7"
    default_image = settings_from_env(container_env(check_chart.template(helm, ["weightCache.enabled=true"])))
    assert default_image.weight_cache_settings().image.startswith("ghcr.io/pykaito/runtime-cpu:")
    rules = cluster_rules(objects)
    assert rules[("", "persistentvolumeclaims")] == ["get", "list", "create", "patch", "delete"]
    assert rules[("", "pods/log")] == ["get"]


@pytest.mark.parametrize(
    "value", ["weightCache.gcGracePeriod=soon", "weightCache.accessMode=ReadMany", "weightCache.size=big"]
)
def test_values_kubernetes_or_the_operator_would_refuse_are_refused_at_install(
    helm: Path, value: str
) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        check_chart.template(helm, ["weightCache.enabled=true", value])
