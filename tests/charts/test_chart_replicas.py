"""The chart's operator replicas: two by default, coordinating through kopf peering."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykaito.operator.__main__ import build_args
from pykaito.operator.settings import settings_from_env
from tests.charts.test_chart import by_kind, check_chart, cluster_rules, container_env, helm, one

pytestmark = pytest.mark.slow
__all__ = ["helm"]  # the fixture, shared with test_chart.py


def test_two_replicas_with_peering_by_default(helm: Path) -> None:
    objects = check_chart.template(helm)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kopf_args = build_args(args)
    priority = int(kopf_args[kopf_args.index("--priority") + 1])
    assert priority > 0 and kopf_args[kopf_args.index("--peering") + 1] == "pykaito"
    assert settings_from_env(container_env(objects)).peering_lifetime_seconds == 15
    peering = one(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "pykaito"
    assert cluster_rules(objects)[("kopf.dev", "clusterkopfpeerings")] == ["get", "list", "watch", "patch"]


def test_each_watched_namespace_gets_its_peering_object(helm: Path) -> None:
    objects = check_chart.template(helm, ["watchNamespaces={team-a,team-b}"])
    assert not by_kind(objects, "ClusterKopfPeering")
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert cluster_rules(objects)[("kopf.dev", "kopfpeerings")] == ["get", "list", "watch", "patch"]


def test_one_replica_runs_standalone_without_peering(helm: Path) -> None:
    objects = check_chart.template(helm, ["replicas=1"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in build_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert not by_kind(objects, "ClusterKopfPeering")
    assert not any(group == "kopf.dev" for group, _ in cluster_rules(objects))
