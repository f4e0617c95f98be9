"""Engine command lines: vLLM, ``transformers serve`` and the llama.cpp runtime, in a fixed order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pykaito.catalog.types import ModelPreset
from pykaito.planner.engine_args import Arg, merge_overrides
from pykaito.planner.memory import Layout

PORT = 5000
WEIGHTS_DIR = "/workspace/weights"
CHAT_TEMPLATE_DIR = "/workspace/chat_templates"
MAX_NUM_SEQS = 256
MIN_NUM_SEQS = 4
TOKENS_PER_SEQUENCE = 1024  # the average sequence length max-num-seqs is sized for
CPU_PARALLEL = 8
DEFAULT_PERFORMANCE_MODE = "balanced"


def serving_dtype(preset: ModelPreset) -> str:
    """vLLM's --dtype: bfloat16 unless the checkpoint is float16; quantized checkpoints choose their own."""
    if preset.dtype in ("float16", "auto"):
        return preset.dtype
    return "bfloat16"


def format_args(preset: ModelPreset) -> list[Arg]:
    """How vLLM reads the checkpoint: Mistral's own format, a special tokenizer mode."""
    args: list[Arg] = []
    if preset.mistral_format:
        args += [("--load-format", "mistral"), ("--config-format", "mistral")]
    mode = "mistral" if preset.mistral_format else preset.tokenizer_mode
    if mode:
        args.append(("--tokenizer-mode", mode))
    return args


def max_num_seqs(kv_tokens: int) -> int:
    """Sequences one engine runs at once: the KV cache over 1024-token sequences, as a power of two.

    Clamped to 4..256 (vLLM's default is 256); beyond the KV cache vLLM would only preempt.
    """
    fit = kv_tokens // TOKENS_PER_SEQUENCE
    power = 1
    while power * 2 <= fit:
        power *= 2
    return max(MIN_NUM_SEQS, min(MAX_NUM_SEQS, power))


def vllm_args(
    preset: ModelPreset,
    layout: Layout,
    *,
    max_model_len: int,
    gpu_memory_utilization: float,
    num_seqs: int,
    performance_mode: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Arg]:
    """``vllm serve`` arguments; ``overrides`` (a ConfigMap's ``vllm:`` section) apply last.

    ``performance_mode`` (interactivity or throughput) becomes vLLM's own --performance-mode;
    balanced is vLLM's default and adds nothing.
    """
    args: list[Arg] = [
        ("--model", preset.model_id),
        *((("--revision", preset.revision),) if preset.revision else ()),
        ("--served-model-name", " ".join(preset.served_names)),
        ("--download-dir", WEIGHTS_DIR),
        ("--dtype", serving_dtype(preset)),
        *format_args(preset),
        ("--tensor-parallel-size", str(layout.tensor_parallel)),
    ]
    if layout.pipeline_parallel > 1:
        args.append(("--pipeline-parallel-size", str(layout.pipeline_parallel)))
    if layout.nodes > 1:
        args.append(("--distributed-executor-backend", "ray"))
    if layout.data_parallel > 1:
        args.append(("--data-parallel-size", str(layout.data_parallel)))
    args += [
        ("--max-model-len", str(max_model_len)),
        ("--gpu-memory-utilization", f"{gpu_memory_utilization:.2f}"),
        ("--trust-remote-code", None),
    ]
    if preset.chat_template:
        args.append(("--chat-template", f"{CHAT_TEMPLATE_DIR}/{preset.chat_template}"))
    if preset.tool_call_parser:
        args += [("--tool-call-parser", preset.tool_call_parser), ("--enable-auto-tool-choice", None)]
    if preset.reasoning_parser:
        args.append(("--reasoning-parser", preset.reasoning_parser))
    args.append(("--max-num-seqs", str(num_seqs)))
    if performance_mode and performance_mode != DEFAULT_PERFORMANCE_MODE:
        args.append(("--performance-mode", performance_mode))
    args.append(("--port", str(PORT)))
    return merge_overrides(args, overrides or {})


def transformers_args(preset: ModelPreset, *, overrides: Mapping[str, Any] | None = None) -> list[Arg]:
    """``transformers serve`` arguments (the model as --force-model, pinned as ``id@commit`` when the
    preset names its commit; continuous batching on)."""
    model = f"{preset.model_id}@{preset.revision}" if preset.revision else preset.model_id
    args: list[Arg] = [
        ("--force-model", model),
        ("--dtype", serving_dtype(preset)),
        ("--device", "cuda"),
        ("--continuous-batching", None),
        ("--host", "0.0.0.0"),
        ("--port", str(PORT)),
    ]
    return merge_overrides(args, overrides or {})


def llamacpp_args(
    preset: ModelPreset,
    *,
    max_model_len: int,
    parallel: int = CPU_PARALLEL,
    overrides: Mapping[str, Any] | None = None,
) -> list[Arg]:
    """Arguments for the llama.cpp runtime; as in llama.cpp, --ctx-size is the KV cache shared
    by the --parallel sequences, so each may grow to max-model-len."""
    args: list[Arg] = [
        ("--model", preset.gguf or preset.model_id),
        ("--served-model-name", " ".join(preset.served_names)),
        ("--ctx-size", str(max_model_len * parallel)),
        ("--parallel", str(parallel)),
        ("--port", str(PORT)),
    ]
    return merge_overrides(args, overrides or {})
