"""The ``/scale`` subresource for the emulator, as the API server serves it for a custom resource.

GET answers an autoscaling/v1 Scale built from the paths the CRD declares (spec.replicas,
status.replicas, status.selector); PATCH (merge) or PUT of a Scale writes spec.replicas only.
"""

from __future__ import annotations

import copy
from typing import Any

import aiohttp.web

INFERENCESETS = "kaito.sh/v1beta1/inferencesets"


def _scale(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("metadata") or {}
    status = raw.get("status") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
        "spec": {"replicas": (raw.get("spec") or {}).get("replicas", 1)},
        "status": {"replicas": status.get("replicas", 0), "selector": status.get("selector", "")},
    }


async def serve_scale(emulator: Any, request: Any, method: str) -> aiohttp.web.StreamResponse:
    if method == "GET":
        return aiohttp.web.json_response(_scale(emulator._current(request).raw))
    data = request.data if isinstance(request.data, dict) else {}
    replicas = (data.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise emulator.invalid(f"spec.replicas: must be a whole number of 0 or more, got {replicas!r}")
    async with emulator._lock:
        obj = emulator._current(request)
        new = copy.deepcopy(obj.raw)
        new.setdefault("spec", {})["replicas"] = replicas
        if new != obj.raw:
            new["metadata"]["generation"] = int(new["metadata"].get("generation", 1)) + 1
            emulator._bump(new)
            obj.history.append(new)
            await emulator._emit(request.resource, "MODIFIED", new)
    return aiohttp.web.json_response(_scale(new))
