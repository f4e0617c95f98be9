"""The InferenceSet admission handler, as the webhook calls it (the Workspace's rules on the template)."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from pykaito.operator.setwebhook import validate_inferenceset
from pykaito.operator.toolkit import default_toolkit

BODY: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "InferenceSet",
    "metadata": {"name": "phi", "namespace": "default"},
    "spec": {
        "replicas": 2,
        "nodeCountLimit": 2,
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {
            "resource": {"instanceType": "Standard_NC40ads_H100_v5"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    },
}
MEMO = SimpleNamespace(runtime=SimpleNamespace(toolkit=default_toolkit()))


async def admit(body: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    operation = "UPDATE" if old else "CREATE"
    await validate_inferenceset(body=kopf.Body(body), memo=MEMO, old=old, operation=operation)


async def test_a_valid_set_is_admitted_and_a_bad_one_refused_with_the_field() -> None:
    await admit(copy.deepcopy(BODY))
    over = copy.deepcopy(BODY)
    over["spec"]["replicas"] = 3
    with pytest.raises(kopf.AdmissionError, match=r"spec\.replicas: 3 replicas x 1 node\(s\) each = 3 nodes"):
        await admit(over)
    typo = copy.deepcopy(BODY)
    typo["spec"]["template"]["inference"]["preset"]["name"] = "phi-4-mini-instrukt"
    with pytest.raises(kopf.AdmissionError, match=r"spec\.template\.inference\.preset\.name"):
        await admit(typo)
    shape = copy.deepcopy(BODY)
    shape["spec"]["replica"] = 1
    with pytest.raises(kopf.AdmissionError, match="unknown field 'replica'"):
        await admit(shape)


async def test_partition_cannot_change_on_update() -> None:
    old = copy.deepcopy(BODY)
    old["spec"]["template"]["resource"] = {"partition": {"mode": "mig", "profile": "2g.24gb"}}
    new = copy.deepcopy(old)
    new["spec"]["template"]["resource"]["partition"]["profile"] = "3g.47gb"
    with pytest.raises(kopf.AdmissionError, match=r"spec\.template\.resource\.partition: cannot change"):
        await admit(new, old)
