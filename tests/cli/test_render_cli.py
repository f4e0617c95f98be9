"""``kaito render``: the real command, its output and its one-line failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).parents[2]
SEED = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-phi-4-mini
resource:
  instanceType: "Standard_NC40ads_H100_v5"
  labelSelector:
    matchLabels:
      apps: phi-4-h100
inference:
  preset:
    name: phi-4-mini-instruct
"""


def kaito(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pykaito.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_render_prints_the_objects_as_yaml_the_same_every_time(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(SEED)
    first = kaito(
        "render", "-f", str(path), "--include-nodeclaims", "--image", "vllm=registry.example/vllm:1"
    )
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    objects = list(yaml.safe_load_all(first.stdout))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("NodeClaim", objects[0]["metadata"]["name"]),
        ("Service", "workspace-phi-4-mini"),
        ("Service", "workspace-phi-4-mini-headless"),
        ("StatefulSet", "workspace-phi-4-mini"),
    ]
    assert first.stdout.startswith("apiVersion: karpenter.sh/v1\nkind: NodeClaim\nmetadata:\n")
    sts = objects[3]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/vllm:1"
    assert container["args"][:3] == ["vllm", "--model", "microsoft/Phi-4-mini-instruct"]
    assert sts["metadata"]["namespace"] == "default"
    for obj in objects[1:]:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    again = kaito(
        "render", "-f", "-", "--include-nodeclaims", "--image", "vllm=registry.example/vllm:1", stdin=SEED
    )
    assert again.stdout == first.stdout


def test_render_without_nodeclaims_and_with_a_namespace() -> None:
    result = kaito("render", "-f", "-", "-n", "models", stdin=SEED)
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [o["kind"] for o in objects] == ["Service", "Service", "StatefulSet"]
    assert {o["metadata"]["namespace"] for o in objects} == {"models"}


def test_an_invalid_workspace_is_one_line_and_exit_2() -> None:
    bad = SEED.replace("phi-4-mini-instruct", "phi-4-mini-instruc")
    result = kaito("render", "-f", "-", stdin=bad)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "phi-4-mini-instruc" in lines[0] and "phi-4-mini-instruct" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_flags_and_byo_without_nodes_fail_with_what_to_do(tmp_path: Path) -> None:
    result = kaito("render", "-f", "-", "--image", "tgi=x", stdin=SEED)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown image key 'tgi': expected vllm, transformers or cpu (e.g. cpu=REPO:TAG)"
    )
    byo = SEED.replace('  instanceType: "Standard_NC40ads_H100_v5"\n', "")
    result = kaito("render", "-f", "-", stdin=byo)
    assert result.returncode == 2
    assert "--nodes" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": "gpu-1",
                            "labels": {
                                "apps": "phi-4-h100",
                                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                "nvidia.com/gpu.count": "1",
                                "nvidia.com/gpu.memory": "81559",
                            },
                        },
                    }
                ],
            }
        )
    )
    result = kaito("render", "-f", "-", "--nodes", str(nodes), "--include-nodeclaims", stdin=byo)
    assert result.returncode == 0, result.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Service", "Service", "StatefulSet"]  # own nodes: nothing to provision


def test_a_configmap_outside_the_file_is_noted_on_stderr() -> None:
    with_config = SEED + "  config: my-params\n"
    result = kaito("render", "-f", "-", stdin=with_config)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "note: workspace/workspace-phi-4-mini: ConfigMap 'my-params' is not in <stdin>"
    )
    sts = list(yaml.safe_load_all(result.stdout))[2]
    assert {"name": "config", "configMap": {"name": "my-params"}} in sts["spec"]["template"]["spec"][
        "volumes"
    ]
