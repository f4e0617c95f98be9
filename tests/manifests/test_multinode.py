"""Several nodes: pod 0 is the Ray head plus API server, the other pods join it as Ray workers."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from pykaito.manifests import render
from pykaito.planner.engine_args import to_argv
from tests.manifests.builders import LLAMA70_ARGS, by_kind, llama70_plan, workspace

HEAD = "workspace-llama-3-3-70b-0.workspace-llama-3-3-70b-headless.models.svc.cluster.local"


def llama70() -> list[dict[str, Any]]:
    ws = workspace(
        metadata={"name": "workspace-llama-3-3-70b", "namespace": "models"},
        resource={
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "llama"}},
        },
        inference={
            "preset": {
                "name": "llama-3.3-70b-instruct",
                "presetOptions": {"modelAccessSecret": "hf-token"},
            }
        },
    )
    return render(ws, llama70_plan())


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0])


def test_replicas_equal_the_planned_nodes_and_each_pod_gets_its_gpus() -> None:
    sts = by_kind(llama70(), "StatefulSet")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert container_of(llama70())["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_container_branches_on_the_pod_ordinal() -> None:
    container = container_of(llama70())
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert container["command"][3] == "pykaito-runtime"  # $0 of the script
    assert container["args"] == ["vllm", *to_argv(LLAMA70_ARGS), "--host", "0.0.0.0"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_HEAD_ADDRESS"]["value"] == HEAD
    assert env["RAY_CLUSTER_SIZE"]["value"] == "2"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert {"name": "ray-gcs", "containerPort": 6379, "protocol": "TCP"} in container["ports"]


def test_only_pod_0_receives_api_traffic_and_the_headless_service_publishes_ray() -> None:
    objects = llama70()
    svc = by_kind(objects, "Service", "workspace-llama-3-3-70b")
    assert svc["spec"]["selector"] == {
        "kaito.sh/workspace": "workspace-llama-3-3-70b",
        "statefulset.kubernetes.io/pod-name": "workspace-llama-3-3-70b-0",
    }
    headless = by_kind(objects, "Service", "workspace-llama-3-3-70b-headless")
    assert [p["port"] for p in headless["spec"]["ports"]] == [5000, 6379]


def _fake_bin(tmp_path: Path) -> tuple[Path, Path]:
    """Stand-ins for ray, python3 and pykaito-runtime that log how they were called."""
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("ray", "python3", "pykaito-runtime"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir, log


def _run(command: list[str], args: list[str], env: dict[str, str], tmp_path: Path) -> list[str]:
    bin_dir, log = _fake_bin(tmp_path)
    full_env = {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run([*command, *args], env=full_env, check=True, timeout=30)
    return log.read_text().splitlines()


def _env(container: dict[str, Any], pod: str) -> dict[str, str]:
    values = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return {**values, "POD_NAME": pod}


def test_pod_0_starts_the_ray_head_waits_for_workers_then_serves(tmp_path: Path) -> None:
    container = container_of(llama70())
    calls = _run(
        container["command"], container["args"], _env(container, "workspace-llama-3-3-70b-0"), tmp_path
    )
    assert calls[0] == "ray start --head --port=6379 --disable-usage-stats"
    assert calls[1].startswith("python3 -c ") and "RAY_CLUSTER_SIZE" in calls[1]
    assert calls[2] == "pykaito-runtime " + " ".join(container["args"])
    assert len(calls) == 3


def test_other_pods_join_the_head_as_ray_workers(tmp_path: Path) -> None:
    container = container_of(llama70())
    calls = _run(
        container["command"], container["args"], _env(container, "workspace-llama-3-3-70b-1"), tmp_path
    )
    assert calls == [f"ray start --address={HEAD}:6379 --disable-usage-stats --block"]


def test_probes_check_the_api_on_pod_0_and_ray_on_workers(tmp_path: Path) -> None:
    container = container_of(llama70())
    probe = container["readinessProbe"]["exec"]["command"]
    assert container["startupProbe"]["exec"]["command"] == probe
    assert container["startupProbe"]["failureThreshold"] > 75  # more weights than the seed
    head = _run(probe, [], _env(container, "workspace-llama-3-3-70b-0"), tmp_path / "head")
    assert len(head) == 1 and head[0].startswith("python3 -c ") and "127.0.0.1:5000/health" in head[0]
    worker = _run(probe, [], _env(container, "workspace-llama-3-3-70b-1"), tmp_path / "worker")
    assert worker == [f"ray health-check --address {HEAD}:6379"]
