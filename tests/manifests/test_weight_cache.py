"""The weight cache's objects: the PVC, the download Job, and the inference pod that reads the cache."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.errors import InputError
from pykaito.manifests import Images, render
from pykaito.manifests.weight_cache import (
    WeightCacheSettings,
    cache_for,
    cache_name,
    render_download_job,
    render_pvc,
    revision_tag,
)
from pykaito.planner.engine_args import to_argv
from tests.manifests.builders import (
    SEED,
    by_kind,
    cpu_plan,
    llama70_plan,
    seed_plan,
    validate_strict,
    workspace,
)

CACHE = "kaito-weights-microsoft-phi-4-mini-instruct-0d6e4079"


def with_secret() -> Any:
    return workspace(
        inference={"preset": {"name": "phi-4-mini-instruct", "presetOptions": {"modelAccessSecret": "hf"}}}
    )


def test_cache_name_is_per_model_and_revision_and_a_dns_label() -> None:
    assert cache_name("microsoft/Phi-4-mini-instruct") == CACHE
    assert cache_name("microsoft/Phi-4-mini-instruct", "main") == CACHE
    assert cache_name("microsoft/Phi-4-mini-instruct", "v2") != CACHE
    commit = "78eb92a46fc37e6b524df991ed9aca9bc6aa7b80"
    assert revision_tag(commit) == "78eb92a4"
    long = cache_name("some-organisation-with-a-long-name/an-extremely-long-model-name-that-goes-on")
    assert len(long) <= 63 and long.startswith("kaito-weights-")


def test_pvc_sized_from_the_model_with_headroom_and_settings() -> None:
    cache = cache_for(workspace(), seed_plan())
    assert cache is not None and cache.name == CACHE and cache.namespace == "default"
    assert cache.size_gib == 11  # 7.29 GiB x 1.15 + 2, rounded up
    pvc = render_pvc(cache)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "11Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and "storageClassName" not in pvc["spec"]
    assert pvc["metadata"]["labels"]["kaito.sh/weight-cache"] == CACHE
    assert pvc["metadata"]["annotations"]["kaito.sh/weight-cache-model"] == "microsoft/Phi-4-mini-instruct"
    chosen = render_pvc(
        cache, WeightCacheSettings(storage_class="azurefile", size="200Gi", access_mode="ReadWriteOnce")
    )
    assert chosen["spec"]["storageClassName"] == "azurefile"
    assert chosen["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert chosen["spec"]["accessModes"] == ["ReadWriteOnce"]
    validate_strict(pvc)
    validate_strict(chosen)


def test_download_job_takes_the_token_by_reference_and_fails_fast_on_a_refusal() -> None:
    cache = cache_for(with_secret(), seed_plan())
    assert cache is not None
    job = render_download_job(cache, with_secret(), Images(cpu="registry.example/cpu:1"))
    assert job["metadata"]["name"] == f"{CACHE}-download" and "ownerReferences" not in job["metadata"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/cpu:1"
    assert container["command"] == [
        "python3", "-m", "pykaito.models.snapshot",
        "--repo", "microsoft/Phi-4-mini-instruct", "--revision", "main",
        "--dest", "/mnt/weight-cache", "--result-file", "/dev/termination-log",
    ]  # fmt: skip
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN", "optional": True}},
    }
    assert {"name": "weight-cache", "persistentVolumeClaim": {"claimName": CACHE}} in pod["volumes"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert job["spec"]["template"]["metadata"]["labels"]["kaito.sh/weight-cache"] == CACHE
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [1]
    validate_strict(job)
    other = render_download_job(
        cache, workspace(), settings=WeightCacheSettings(image="registry.example/dl:2")
    )
    (plain,) = other["spec"]["template"]["spec"]["containers"]
    assert plain["image"] == "registry.example/dl:2" and all(e["name"] != "HF_TOKEN" for e in plain["env"])


def test_inference_pod_reads_the_cache_read_only_with_the_hub_off() -> None:
    cache = cache_for(workspace(), seed_plan())
    objects = render(workspace(), seed_plan(), weight_cache=cache)
    spec = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[args.index("--model") + 1] == "/mnt/weight-cache/model"
    assert "microsoft/Phi-4-mini-instruct" not in args
    assert args[args.index("--served-model-name") + 1] == "phi-4-mini-instruct"  # the API name is unchanged
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    assert {"name": "weight-cache", "persistentVolumeClaim": {"claimName": CACHE, "readOnly": True}} in spec[
        "volumes"
    ]
    assert {"name": "weight-cache", "mountPath": "/mnt/weight-cache", "readOnly": True} in container[
        "volumeMounts"
    ]
    for obj in objects:
        validate_strict(obj)
    plain = by_kind(render(workspace(), seed_plan()), "StatefulSet")
    assert by_kind(objects, "StatefulSet")["metadata"]["annotations"] != plain["metadata"]["annotations"]


def test_transformers_runtime_gets_the_cache_as_force_model() -> None:
    plan = seed_plan(
        runtime="transformers", engine_args=(("--force-model", "microsoft/Phi-4-mini-instruct"),)
    )
    cache = cache_for(workspace(), plan)
    (container,) = by_kind(render(workspace(), plan, weight_cache=cache), "StatefulSet")["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["args"][container["args"].index("--force-model") + 1] == "/mnt/weight-cache/model"


@pytest.mark.parametrize(
    ("ws", "plan"),
    [
        pytest.param(
            workspace(inference={"preset": {"name": "smollm2-135m-instruct"}}), cpu_plan(), id="cpu-preset"
        ),
        pytest.param(
            workspace(metadata={**SEED["metadata"], "annotations": {"kaito.sh/use-local-weights": "true"}}),
            seed_plan(),
            id="use-local-weights",
        ),
        pytest.param(
            workspace(
                inference={"preset": {"name": "phi-4-mini-instruct", "presetOptions": {"image": "my/img:1"}}}
            ),
            seed_plan(),
            id="custom-image",
        ),
    ],
)
def test_no_cache_where_the_weights_are_not_downloaded_at_start(ws: Any, plan: Any) -> None:
    assert cache_for(ws, plan) is None


def test_multi_node_model_sized_for_every_shard() -> None:
    cache = cache_for(workspace(inference={"preset": {"name": "llama-3.3-70b-instruct"}}), llama70_plan())
    assert cache is not None
    assert cache.size_gib >= 67 * 1.15


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"size": "lots"}, "weight cache size 'lots' is not a Kubernetes quantity", id="size"),
        pytest.param({"access_mode": "ReadMany"}, "weight cache access mode 'ReadMany'", id="mode"),
    ],
)
def test_settings_refuse_what_kubernetes_would(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        WeightCacheSettings(**settings)


PHI_COMMIT = "c0fb9e74abda11b496b7907a9c6c9009a7a0488f"


def test_cache_and_engine_use_the_commit_the_preset_is_pinned_to() -> None:
    from pykaito.planner import plan as make_plan

    planned = make_plan(workspace())
    assert planned.model_revision == PHI_COMMIT
    argv = list(to_argv(planned.engine_args))
    assert argv[argv.index("--revision") + 1] == PHI_COMMIT  # without the cache vLLM fetches that commit
    cache = cache_for(workspace(), planned)
    assert cache is not None and cache.revision == PHI_COMMIT
    assert cache.name == f"kaito-weights-microsoft-phi-4-mini-instruct-{PHI_COMMIT[:8]}"
    assert render_pvc(cache)["metadata"]["annotations"]["kaito.sh/weight-cache-revision"] == PHI_COMMIT
    command = render_download_job(cache, workspace())["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--revision") + 1] == PHI_COMMIT
    (container,) = by_kind(render(workspace(), planned, weight_cache=cache), "StatefulSet")["spec"][
        "template"
    ]["spec"]["containers"]
    assert container["args"][container["args"].index("--model") + 1] == "/mnt/weight-cache/model"
    assert "--revision" not in container["args"]  # a directory has no revisions: the cache holds the commit


RWO = WeightCacheSettings(
    storage_class="managed-csi", access_mode="ReadWriteOnce", image="registry.example/dl:3"
)


def test_read_write_once_gives_each_pod_its_own_cache_filled_by_an_init_container() -> None:
    cache = cache_for(with_secret(), seed_plan(node_count=2, pipeline_parallel=2), RWO)
    assert cache is not None and cache.per_pod
    objects = render(with_secret(), seed_plan(node_count=2, pipeline_parallel=2), weight_cache=cache)
    sts = by_kind(objects, "StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "weight-cache-pod"
    assert claim["metadata"]["labels"]["kaito.sh/weight-cache-of"] == CACHE
    assert claim["metadata"]["labels"]["kaito.sh/workspace"] == SEED["metadata"]["name"]  # found on deletion
    assert "kaito.sh/weight-cache" not in claim["metadata"]["labels"]  # not a shared cache: never swept
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "managed-csi"
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{cache.size_gib}Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }
    spec = sts["spec"]["template"]["spec"]
    # the StatefulSet adds each pod's claim as a volume
    assert all(v["name"] not in ("weight-cache", "weight-cache-pod") for v in spec["volumes"])
    assert spec["securityContext"]["fsGroup"] == 1000  # the non-root downloader may write the new volume
    (fill,) = spec["initContainers"]
    assert fill["name"] == "weight-cache" and fill["image"] == "registry.example/dl:3"
    assert fill["command"][:3] == ["python3", "-m", "pykaito.models.snapshot"]
    assert fill["command"][fill["command"].index("--dest") + 1] == "/mnt/weight-cache"
    assert {"name": "weight-cache-pod", "mountPath": "/mnt/weight-cache"} in fill["volumeMounts"]
    token = next(e for e in fill["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "hf" and "value" not in token
    (container,) = spec["containers"]
    assert {"name": "weight-cache-pod", "mountPath": "/mnt/weight-cache", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert container["args"][container["args"].index("--model") + 1] == "/mnt/weight-cache/model"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    for obj in objects:
        validate_strict(obj)
    shared = by_kind(
        render(with_secret(), seed_plan(), weight_cache=cache_for(with_secret(), seed_plan())), "StatefulSet"
    )
    assert (
        "volumeClaimTemplates" not in shared["spec"]
        and "initContainers" not in shared["spec"]["template"]["spec"]
    )
