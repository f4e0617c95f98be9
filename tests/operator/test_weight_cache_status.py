"""The weight cache's status logic, pure: conditions, failure reasons, settings."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.api.types import ConditionType, State
from pykaito.errors import InputError
from pykaito.manifests.weight_cache import WeightCache
from pykaito.operator import conditions as cond
from pykaito.operator.settings import settings_from_env
from pykaito.operator.weightcache import CacheState, _failure, waiting_message, with_cache

CACHE = WeightCache("kaito-weights-m-0d6e4079", "team", "org/m", "main", 10)
SEEN = cond.Observed(target_nodes=1, nodeclaims=None, nodes=[], statefulset=None, pods=[])


def ready_nodes() -> list[cond.Verdict]:
    node = {
        "metadata": {"name": "n"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
    }
    return cond.conditions_from(
        cond.Observed(target_nodes=1, nodeclaims=None, nodes=[node], statefulset=None, pods=[])
    )


def by_type(verdicts: list[cond.Verdict]) -> dict[str, cond.Verdict]:
    return {str(v.type): v for v in verdicts}


def test_pending_download_holds_resource_ready_and_says_why() -> None:
    state = CacheState(
        CACHE, False, False, "ModelMirrorPending", "downloading org/m: 1.00 GiB of 4.00 GiB (25%)"
    )
    verdicts = with_cache(ready_nodes(), state)
    found = by_type(verdicts)
    assert verdicts[0].type is ConditionType.MODEL_MIRROR_READY and not verdicts[0].ok
    assert found["ResourceReady"].reason == "ModelMirrorNotReady" and "25%" in found["ResourceReady"].message
    assert found["InferenceReady"].reason == "ModelMirrorNotReady"
    assert found["WorkspaceSucceeded"].reason == cond.Reason.PENDING
    assert cond.state_of(verdicts) is State.PENDING


def test_failed_download_fails_the_workspace() -> None:
    state = CacheState(CACHE, False, True, "DownloadUnauthorized", "gated")
    verdicts = with_cache(ready_nodes(), state)
    assert by_type(verdicts)["WorkspaceSucceeded"].reason == cond.Reason.FAILED
    assert by_type(verdicts)["WorkspaceSucceeded"].message == "DownloadUnauthorized: gated"
    assert cond.state_of(verdicts) is State.FAILED


def test_ready_cache_only_adds_its_condition() -> None:
    plain = ready_nodes()
    verdicts = with_cache(plain, CacheState(CACHE, True, False, "ModelMirrorReady", "in the cache"))
    assert verdicts[1:] == plain and verdicts[0].ok
    assert with_cache(plain, None) == plain


def terminated(reason: str = "", message: str = "", exit_code: int = 1) -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}
    return {
        "metadata": {"name": "p"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "download", "state": state}]},
    }


@pytest.mark.parametrize(
    ("pods", "job", "reason", "detail"),
    [
        pytest.param(
            [
                terminated(
                    message='{"ok": false, "reason": "DiskFull", "message": "the cache volume filled up"}'
                )
            ],
            {},
            "DownloadDiskFull",
            "the cache volume filled up",
            id="downloader-reason",
        ),
        pytest.param(
            [terminated(reason="OOMKilled", exit_code=137)],
            {},
            "DownloadOOMKilled",
            "out of memory",
            id="oom",
        ),
        pytest.param(
            [
                {
                    "metadata": {"name": "p"},
                    "status": {"phase": "Failed", "reason": "Evicted", "message": "disk pressure"},
                }
            ],
            {},
            "DownloadEvicted",
            "disk pressure",
            id="evicted",
        ),
        pytest.param(
            [],
            {
                "status": {
                    "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]
                }
            },
            "DownloadFailed",
            "BackoffLimitExceeded",
            id="job-only",
        ),
    ],
)
def test_failure_reasons(pods: list[dict[str, Any]], job: dict[str, Any], reason: str, detail: str) -> None:
    got, message = _failure(CACHE, job, pods)
    assert got == reason and detail in message
    assert "delete Job kaito-weights-m-0d6e4079-download (namespace team)" in message


def test_settings_from_the_environment() -> None:
    env = {
        "KAITO_OPERATOR_WEIGHT_CACHE_ENABLED": "true",
        "KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE": "30m",
        "KAITO_OPERATOR_WEIGHT_CACHE_SIZE": "200Gi",
        "KAITO_OPERATOR_RUNTIME_IMAGE_CPU": "registry.example/cpu:1",
    }
    settings = settings_from_env(env)
    assert settings.weight_cache_enabled and settings.weight_cache_gc_grace_seconds == 1800
    made = settings.weight_cache_settings()
    assert made.size == "200Gi" and made.image == "registry.example/cpu:1"
    assert not settings_from_env({}).weight_cache_enabled  # off unless the chart turns it on
    bad = settings_from_env({"KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE": "soon"})
    with pytest.raises(InputError, match="KAITO_OPERATOR_WEIGHT_CACHE_GC_GRACE='soon' is not a duration"):
        bad.weight_cache_settings()


def test_a_pending_pvc_is_named_with_what_to_check() -> None:
    pvc = {
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "managed-csi"},
        "status": {"phase": "Pending"},
    }
    message = waiting_message(CACHE, pvc)
    assert message.startswith("waiting for the download Job kaito-weights-m-0d6e4079-download to start")
    pending = "PersistentVolumeClaim kaito-weights-m-0d6e4079 is Pending"
    assert f"{pending}: check that managed-csi offers ReadWriteMany" in message
    bound = waiting_message(CACHE, {"spec": {}, "status": {"phase": "Bound"}})
    assert "Pending" not in bound
