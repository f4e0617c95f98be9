"""``kaito render --weight-cache``: the cache's PVC and download Job, once per model, before the pods."""

from __future__ import annotations

import yaml

from tests.cli.test_render_cli import SEED, kaito

CACHE = "kaito-weights-microsoft-phi-4-mini-instruct-c0fb9e74"
CPU = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: smollm2
  annotations:
    kaito.sh/runtime: llamacpp
resource:
  labelSelector:
    matchLabels:
      kubernetes.io/os: linux
inference:
  preset:
    name: smollm2-135m-instruct
"""


def test_two_workspaces_on_one_model_share_one_cache_and_cpu_presets_get_none() -> None:
    second = SEED.replace("name: workspace-phi-4-mini", "name: phi-two")
    result = kaito(
        "render",
        "-f",
        "-",
        "--weight-cache",
        "--storage-class",
        "azurefile-csi",
        stdin=f"{SEED}---\n{second}---\n{CPU}",
    )
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds[:2] == [("PersistentVolumeClaim", CACHE), ("Job", f"{CACHE}-download")]
    assert [k for k, _ in kinds].count("PersistentVolumeClaim") == 1 and [k for k, _ in kinds].count(
        "Job"
    ) == 1
    assert objects[0]["spec"]["storageClassName"] == "azurefile-csi"
    statefulsets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
    for name in ("workspace-phi-4-mini", "phi-two"):
        volumes = statefulsets[name]["spec"]["template"]["spec"]["volumes"]
        assert {
            "name": "weight-cache",
            "persistentVolumeClaim": {"claimName": CACHE, "readOnly": True},
        } in volumes
    cpu_volumes = statefulsets["smollm2"]["spec"]["template"]["spec"]["volumes"]
    assert all(v["name"] != "weight-cache" for v in cpu_volumes)
    assert f"kubectl wait --for=condition=complete job/{CACHE}-download" in result.stderr


def test_without_the_flag_nothing_changes_and_storage_class_alone_is_refused() -> None:
    plain = kaito("render", "-f", "-", stdin=SEED)
    assert "PersistentVolumeClaim" not in plain.stdout and "weight-cache" not in plain.stdout
    refused = kaito("render", "-f", "-", "--storage-class", "x", stdin=SEED)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: --storage-class applies to the weight cache: add --weight-cache"
