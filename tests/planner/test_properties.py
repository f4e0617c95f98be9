"""Properties of the planner over generated models and machines."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pykaito.catalog import load_catalog
from pykaito.catalog.types import GIB, InstanceType, ModelPreset
from pykaito.errors import PlanError
from pykaito.planner import plan_preset
from pykaito.planner.commands import vllm_args
from pykaito.planner.engine_args import merge_overrides, to_argv
from pykaito.planner.memory import Layout, valid_tensor_parallel

CATALOG = load_catalog()
GPU_PRESETS = sorted(p.name for p in CATALOG.presets.values() if not p.cpu_only)


@st.composite
def models(draw: st.DrawFn) -> ModelPreset:
    layers = draw(st.integers(8, 96))
    kv_heads = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    heads = kv_heads * draw(st.sampled_from([1, 2, 4, 8]))
    head_dim = draw(st.sampled_from([64, 96, 128, 256]))
    return ModelPreset(
        name="generated",
        model_id="org/generated",
        size_gib=draw(st.floats(0.5, 400.0)),
        context_length=draw(st.sampled_from([4096, 8192, 32768, 131072])),
        kv_bytes_per_token=2 * kv_heads * head_dim * layers * 2,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
    )


def machine(gpus: int, per_gpu_gib: float) -> InstanceType:
    return InstanceType("generated", "node", gpus, "G", per_gpu_gib * gpus, 1000.0)


gpu_counts = st.sampled_from([1, 2, 4, 8])
per_gpu = st.floats(16.0, 192.0)


def _plan(model: ModelPreset, instance: InstanceType, **kwargs: Any) -> Any:
    try:
        return plan_preset(model, instance, catalog=CATALOG, **kwargs)
    except PlanError:
        return None


@settings(max_examples=60, deadline=None)
@given(models(), gpu_counts, per_gpu, st.floats(1.0, 64.0))
def test_more_gpu_memory_never_needs_more_gpus(
    model: ModelPreset, gpus: int, memory: float, extra: float
) -> None:
    small = _plan(model, machine(gpus, memory))
    large = _plan(model, machine(gpus, memory + extra))
    if small is not None:
        assert large is not None
        assert large.total_gpus <= small.total_gpus
        assert large.node_count <= small.node_count


@settings(max_examples=60, deadline=None)
@given(models(), gpu_counts, per_gpu, st.one_of(st.none(), st.sampled_from([2048, 4096, 16384])))
def test_a_plan_never_exceeds_the_memory_it_claims(
    model: ModelPreset, gpus: int, memory: float, max_model_len: int | None
) -> None:
    result = _plan(model, machine(gpus, memory), max_model_len=max_model_len)
    if result is None:
        return
    m = result.memory
    assert m.weights_gib + m.kv_cache_gib + m.overhead_gib <= m.usable_gib + 1e-9
    assert m.usable_gib <= m.gpu_memory_gib
    assert m.kv_cache_gib >= 0
    # the KV cache the plan counts fits in the memory it sets aside, and holds one full sequence
    model_parallel = result.tensor_parallel * result.pipeline_parallel
    assert result.total_gpus == model_parallel * result.data_parallel
    per_gpu_token = model.kv_bytes_per_token / (
        result.pipeline_parallel * min(result.tensor_parallel, model.kv_heads or 1)
    )
    assert result.kv_cache_tokens * per_gpu_token <= m.kv_cache_gib * GIB + 1
    assert result.max_model_len <= result.kv_cache_tokens
    assert result.max_model_len <= model.context_length
    assert valid_tensor_parallel(model, result.tensor_parallel)
    if max_model_len is not None:
        assert result.max_model_len == max_model_len


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(GPU_PRESETS), st.sampled_from(sorted(t.name for t in CATALOG.gpu_instance_types())))
def test_engine_arguments_are_deterministic(preset: str, instance_type: str) -> None:
    first = _plan(CATALOG.presets[preset], CATALOG.instance_types[instance_type])
    second = _plan(CATALOG.presets[preset], CATALOG.instance_types[instance_type])
    assert (first is None) == (second is None)
    if first is not None:
        assert to_argv(first.engine_args) == to_argv(second.engine_args)
        assert first == second


override_values = st.one_of(
    st.booleans(), st.none(), st.integers(1, 10_000), st.sampled_from(["auto", "fp8"])
)
override_keys = st.sampled_from(
    [
        "max-model-len",
        "max_num_seqs",
        "enforce-eager",
        "kv-cache-dtype",
        "tensor_parallel_size",
        "seed",
        "port",
    ]
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(override_keys, override_values, max_size=6), st.randoms(use_true_random=False))
def test_overrides_are_order_independent(overrides: dict[str, Any], rnd: Any) -> None:
    preset = CATALOG.presets["phi-4-mini-instruct"]
    base = vllm_args(
        preset, Layout(1, 1, 1, 1, 1), max_model_len=4096, gpu_memory_utilization=0.84, num_seqs=256
    )
    items = list(overrides.items())
    rnd.shuffle(items)
    assert merge_overrides(base, dict(items)) == merge_overrides(base, overrides)
    merged = to_argv(merge_overrides(base, overrides))
    assert merged[:2] == ["--model", "microsoft/Phi-4-mini-instruct"]  # planned order is kept
    names = [a for a in merged if a.startswith("--")]
    assert len(names) == len(set(names))
