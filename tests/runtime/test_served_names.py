"""A model answers to every served name: the preset name and upstream KAITO's served name."""

from __future__ import annotations

import httpx

from pykaito.catalog import load_catalog
from pykaito.planner import plan_preset
from pykaito.planner.engine_args import to_argv
from pykaito.runtime.entry import _parser
from tests.runtime.conftest import ClientFactory, assert_error
from tests.runtime.fake_engine import FakeEngine

NAMES = ("gemma-3-4b-instruct", "gemma-3-4b-it")


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}]}


async def test_models_lists_every_served_name_and_each_is_answered(
    make_client: ClientFactory, fake: FakeEngine
) -> None:
    client: httpx.AsyncClient = make_client(fake, served_model_name=NAMES[0], served_model_aliases=NAMES[1:])
    cards = (await client.get("/v1/models")).json()["data"]
    assert [c["id"] for c in cards] == list(NAMES)
    for name in NAMES:
        reply = await client.post("/v1/chat/completions", json=chat(name))
        assert reply.status_code == 200
        assert reply.json()["model"] == NAMES[0]  # as vLLM: replies name the first served name
    assert_error(await client.post("/v1/chat/completions", json=chat("gemma-3-4b")), 404, param="model")


def test_llamacpp_entry_takes_several_served_names() -> None:
    args = _parser().parse_args(["llamacpp", "--model", "embedded", "--served-model-name", *NAMES])
    assert args.served_model_name == list(NAMES)
    assert _parser().parse_args(["llamacpp", "--model", "embedded"]).served_model_name == []


def test_every_catalog_preset_is_served_under_both_names() -> None:
    catalog = load_catalog()
    for preset in catalog.presets.values():
        if preset.cpu_only:
            continue
        argv = to_argv(plan_preset(preset, "Standard_ND96isr_H200_v5", count=None).engine_args)
        start = argv.index("--served-model-name") + 1
        served = list(preset.served_names)
        assert argv[start : start + len(served)] == served, preset.name
        assert served[-1] == preset.model_id.split("/")[-1].lower()
