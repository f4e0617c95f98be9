"""Engine command lines: vLLM's argument order, max-num-seqs, llama.cpp and transformers."""

from __future__ import annotations

import pytest

from pykaito.catalog import load_catalog
from pykaito.planner.commands import llamacpp_args, max_num_seqs, transformers_args, vllm_args
from pykaito.planner.engine_args import to_argv
from pykaito.planner.memory import Layout

CATALOG = load_catalog()


def test_vllm_multi_node_order_with_every_optional_flag() -> None:
    preset = CATALOG.presets["gpt-oss-120b"]
    argv = to_argv(
        vllm_args(
            preset, Layout(2, 8, 8, 2, 1), max_model_len=65536, gpu_memory_utilization=0.84, num_seqs=128
        )
    )
    flags = [a for a in argv if a.startswith("--")]
    assert flags == [
        "--model",
        "--revision",
        "--served-model-name",
        "--download-dir",
        "--dtype",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--distributed-executor-backend",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--trust-remote-code",
        "--tool-call-parser",
        "--enable-auto-tool-choice",
        "--reasoning-parser",
        "--max-num-seqs",
        "--port",
    ]
    assert argv[argv.index("--reasoning-parser") + 1] == "openai_gptoss"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"


def test_vllm_data_parallel_and_overrides_last() -> None:
    preset = CATALOG.presets["mistral-7b-instruct"]
    args = vllm_args(
        preset,
        Layout(1, 4, 1, 1, 4),
        max_model_len=32768,
        gpu_memory_utilization=0.84,
        num_seqs=256,
        overrides={"max-num-seqs": 64, "trust-remote-code": False, "swap-space": 8},
    )
    argv = to_argv(args)
    assert argv[argv.index("--data-parallel-size") + 1] == "4"
    assert argv[argv.index("--max-num-seqs") + 1] == "64"
    assert "--trust-remote-code" not in argv
    assert argv[-2:] == ["--swap-space", "8"]
    assert "--chat-template" not in argv  # as upstream: Mistral's own tokenizer carries the template
    assert argv[argv.index("--tokenizer-mode") + 1] == "mistral"
    assert argv[argv.index("--load-format") + 1] == "mistral"


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        pytest.param(0, 4, id="floor"),
        pytest.param(2048, 4, id="two-sequences"),
        pytest.param(80_000, 64, id="a10"),
        pytest.param(176_768, 128, id="power-of-two"),
        pytest.param(10_000_000, 256, id="cap"),
    ],
)
def test_max_num_seqs(tokens: int, expected: int) -> None:
    assert max_num_seqs(tokens) == expected


def test_llamacpp_and_transformers_arguments() -> None:
    smol = CATALOG.presets["smollm2-135m-instruct"]
    assert to_argv(llamacpp_args(smol, max_model_len=2048, parallel=4)) == [
        "--model", "embedded", "--served-model-name", "smollm2-135m-instruct",
        "--ctx-size", "8192", "--parallel", "4", "--port", "5000",
    ]  # fmt: skip
    phi = CATALOG.presets["phi-4-mini-instruct"]
    argv = to_argv(transformers_args(phi, overrides={"device": "cuda:0"}))
    # pinned as transformers serve reads it: model_id@commit
    assert argv[:2] == [
        "--force-model",
        "microsoft/Phi-4-mini-instruct@c0fb9e74abda11b496b7907a9c6c9009a7a0488f",
    ]
    assert argv[argv.index("--device") + 1] == "cuda:0"
    assert "--continuous-batching" in argv
