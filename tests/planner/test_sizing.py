"""Cases the planner must get right: the seed Workspace, multi-node, count, context, runtimes, nodes."""

from __future__ import annotations

from typing import Any

import pytest

from pykaito.api.types import Workspace
from pykaito.catalog import load_catalog
from pykaito.catalog.types import InstanceType
from pykaito.errors import CatalogError, PlanError
from pykaito.planner import alternatives, plan, plan_preset
from pykaito.planner.engine_args import to_argv

CATALOG = load_catalog()


def workspace(
    preset: str = "phi-4-mini-instruct",
    instance_type: str | None = "Standard_NC40ads_H100_v5",
    *,
    count: int | None = None,
    annotations: dict[str, str] | None = None,
    selector: dict[str, Any] | None = None,
) -> Workspace:
    resource: dict[str, Any] = {}
    if instance_type:
        resource["instanceType"] = instance_type
    if count is not None:
        resource["count"] = count
    if selector is not None:
        resource["labelSelector"] = selector
    return Workspace.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "workspace-phi-4-mini", "annotations": annotations or {}},
            "resource": resource,
            "inference": {"preset": {"name": preset}},
        }
    )


def test_seed_workspace_runs_on_one_h100() -> None:
    result = plan(workspace())
    assert result.workspace == "workspace-phi-4-mini"
    assert (result.gpus_per_node, result.node_count, result.total_gpus) == (1, 1, 1)
    assert (result.tensor_parallel, result.pipeline_parallel, result.data_parallel) == (1, 1, 1)
    assert result.runtime == "vllm"
    assert result.gpu_memory_utilization == 0.84
    m = result.memory
    assert m.gpu_memory_gib == 94
    assert m.usable_gib == pytest.approx(78.96)
    assert m.weights_gib == pytest.approx(7.15 * 1.02)
    assert m.overhead_gib == pytest.approx(2.3 + 0.05 * 7.15 * 1.02)
    assert m.kv_cache_gib == pytest.approx(78.96 - 7.293 - 2.66465)
    assert result.max_model_len == 131072  # the full context fits: no need for upstream's 2048
    assert result.kv_cache_tokens == pytest.approx(69.0 * 8192, rel=0.001)  # 128 KiB per token
    assert result.concurrent_sequences == pytest.approx(result.kv_cache_tokens / 131072)
    # H100 NVL: 3900 GB/s over 7.15 GiB of weights
    assert result.decode_tokens_per_s == pytest.approx(3900e9 / (7.15 * 2**30))
    assert result.upstream is not None and result.upstream.node_count == 1
    text = " ".join(result.explanation)
    assert "Tensor parallel 1" in text and "max-model-len 131072" in text


def test_seed_engine_arguments_in_upstream_order() -> None:
    argv = to_argv(plan(workspace()).engine_args)
    assert argv == [
        "--model", "microsoft/Phi-4-mini-instruct",
        "--revision", "c0fb9e74abda11b496b7907a9c6c9009a7a0488f",
        "--served-model-name", "phi-4-mini-instruct",
        "--download-dir", "/workspace/weights",
        "--dtype", "bfloat16",
        "--tensor-parallel-size", "1",
        "--max-model-len", "131072",
        "--gpu-memory-utilization", "0.84",
        "--trust-remote-code",
        "--chat-template", "/workspace/chat_templates/tool-chat-phi4-mini.jinja",
        "--tool-call-parser", "phi4_mini_json",
        "--enable-auto-tool-choice",
        "--max-num-seqs", "256",
        "--port", "5000",
    ]  # fmt: skip


def test_llama_70b_on_one_a100_per_node_needs_several_nodes_and_says_so() -> None:
    result = plan_preset("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4")
    assert result.node_count == 3
    assert result.gpus_per_node == 1
    assert (result.tensor_parallel, result.pipeline_parallel) == (1, 3)
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "3"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert "--data-parallel-size" not in argv
    assert any(line.startswith("3 nodes: fewer cannot hold 131.42 GiB") for line in result.explanation)
    assert any("Pipeline parallel 3 with the Ray executor" in line for line in result.explanation)
    m = result.memory
    assert m.weights_gib == pytest.approx(131.42 * 1.02 / 3)


def test_llama_70b_on_nd96asr_uses_tensor_parallel_8_on_one_node() -> None:
    result = plan_preset("llama-3.3-70b-instruct", "Standard_ND96asr_v4")
    assert (result.node_count, result.gpus_per_node) == (1, 8)
    assert (result.tensor_parallel, result.pipeline_parallel, result.data_parallel) == (8, 1, 1)
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert "--pipeline-parallel-size" not in argv and "--distributed-executor-backend" not in argv
    assert result.memory.weights_gib == pytest.approx(131.42 * 1.02 / 8)


def test_small_model_on_a_multi_gpu_node_runs_one_copy_per_gpu() -> None:
    result = plan_preset("phi-4-mini-instruct", "Standard_NC96ads_A100_v4")
    assert (result.tensor_parallel, result.data_parallel, result.total_gpus) == (1, 4, 4)
    assert ("--data-parallel-size", "4") in result.engine_args
    assert result.concurrent_sequences == pytest.approx(4 * result.kv_cache_tokens / result.max_model_len)


def test_tensor_parallel_respects_the_heads() -> None:
    # phi-4: 40 heads and 10 KV heads; vLLM refuses tensor parallel 8 or 4, so 2 x data parallel 4
    result = plan_preset("phi-4", "g5.48xlarge")
    assert (result.tensor_parallel, result.pipeline_parallel, result.data_parallel) == (2, 1, 4)
    assert result.total_gpus == 8
    assert any("do not split 8 ways" in line for line in result.explanation)


def test_count_is_honoured_when_enough() -> None:
    result = plan(workspace("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", count=4))
    assert result.node_count == 4
    assert result.pipeline_parallel == 4
    assert any(
        "4 node(s) as resource.count asks (the model needs only 3)" in line for line in result.explanation
    )


def test_count_too_small_for_a_preset_plan_is_refused_with_the_nodes_needed() -> None:
    # `kaito plan PRESET --count N` asks for exactly N nodes: too few is an error there
    with pytest.raises(PlanError) as caught:
        plan_preset("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", count=2)
    message = str(caught.value)
    assert "resource.count 2 is too few" in message
    assert "needs 3 nodes of Standard_NC24ads_A100_v4" in message
    assert "set resource.count to 3" in message
    # what would fit instead with the same count, smallest first
    assert "these fit with 2 nodes: Standard_NC40ads_H100_v5 (2 nodes, max-model-len 40960)" in message


def test_workspace_count_below_the_need_is_replaced_by_the_planned_count_with_a_note() -> None:
    # as upstream admits it: the planner's node count is used and the plan says why
    result = plan(workspace("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", count=2))
    assert result.node_count == 3 and result.replicas == 1
    [note] = result.notes
    assert "resource.count 2 is below what llama-3.3-70b-instruct needs" in note
    assert "3 nodes are used instead" in note
    assert note in result.explanation


def test_workspace_count_above_the_need_runs_copies_of_the_model() -> None:
    result = plan(workspace("phi-4-mini-instruct", "Standard_NC24ads_A100_v4", count=3))
    assert (result.node_count, result.replicas, result.total_nodes, result.total_gpus) == (1, 3, 3, 3)
    assert not result.multi_node and result.notes == ()
    assert any(
        "3 independent copies run, one per node (data parallel)" in line for line in result.explanation
    )


def test_count_below_one_is_refused() -> None:
    with pytest.raises(PlanError, match="at least 1"):
        plan_preset("phi-4-mini-instruct", "Standard_NC40ads_H100_v5", count=0)


@pytest.mark.parametrize(
    ("preset", "instance_type", "expected"),
    [
        # 24 GiB A10 at 82 %: 19.68 - 7.29 - 2.66 = 9.72 GiB = 79,632 tokens -> 78 x 1024
        pytest.param("phi-4-mini-instruct", "Standard_NV36ads_A10_v5", 78848, id="phi-4-mini@A10"),
        pytest.param("phi-4-mini-instruct", "g5.xlarge", 82944, id="phi-4-mini@A10G"),  # 84 %
        pytest.param("phi-4-mini-instruct", "Standard_NC24ads_A100_v4", 131072, id="phi-4-mini@A100"),
        pytest.param("phi-3-mini-4k-instruct", "g6.xlarge", 4096, id="capped-at-context"),
    ],
)
def test_max_model_len_is_chosen_from_kv_capacity(preset: str, instance_type: str, expected: int) -> None:
    result = plan_preset(preset, instance_type)
    assert result.max_model_len == expected
    assert result.max_model_len <= result.kv_cache_tokens
    assert result.max_model_len % 1024 == 0


def test_round_context_below_4096_uses_multiples_of_256() -> None:
    # 12.3 GiB x 0.84 = 10.33 GiB leaves about 0.37 GiB, some 3,000 tokens, for phi-4-mini's KV cache
    small = InstanceType("small", "node", 1, "T", 12.3, 300)
    result = plan_preset("phi-4-mini-instruct", small)
    assert result.node_count == 1
    assert 2048 <= result.max_model_len < 4096
    assert result.max_model_len % 256 == 0
    assert result.max_model_len <= result.kv_cache_tokens < result.max_model_len + 1024


def test_explicit_max_model_len_is_kept_and_may_need_more_nodes() -> None:
    short = plan_preset("phi-4-mini-instruct", "g6.xlarge", max_model_len=2048)
    long = plan_preset("phi-4-mini-instruct", "g6.xlarge", max_model_len=131072)
    assert (short.node_count, short.max_model_len) == (1, 2048)
    assert long.max_model_len == 131072
    assert long.node_count == 2
    assert long.kv_cache_tokens >= 131072


def test_max_model_len_beyond_the_context_limit_is_refused() -> None:
    with pytest.raises(PlanError, match="exceeds phi-4's context limit of 16384"):
        plan_preset("phi-4", "Standard_NC40ads_H100_v5", max_model_len=32768)


def test_too_long_a_context_for_a_fixed_count_names_what_would_fit() -> None:
    with pytest.raises(PlanError) as caught:
        plan_preset("phi-4-mini-instruct", "g6.xlarge", max_model_len=131072, count=1)
    message = str(caught.value)
    assert "set resource.count to 2" in message
    assert "or set max-model-len to 82944 or less" in message
    assert "these fit with 1 node: g5.12xlarge (1 node, max-model-len 131072)" in message


def test_config_overrides_apply_last_and_drive_the_sizing() -> None:
    config = {"vllm": {"max-model-len": 8192, "gpu_memory_utilization": 0.9, "enforce-eager": True}}
    result = plan(workspace(), config=config)
    assert result.max_model_len == 8192
    assert result.gpu_memory_utilization == 0.9
    assert result.memory.usable_gib == pytest.approx(94 * 0.9)
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    assert argv[-1] == "--enforce-eager"
    assert any("inference_config.yaml overrides" in line for line in result.explanation)


def test_config_with_a_bad_section_is_refused() -> None:
    with pytest.raises(PlanError, match="'vllm' must be a mapping"):
        plan(workspace(), config={"vllm": ["max-model-len"]})
    with pytest.raises(PlanError, match="whole number"):
        plan(workspace(), config={"vllm": {"max-model-len": "long"}})


def test_cpu_preset_plans_llamacpp_without_a_gpu() -> None:
    result = plan(workspace("smollm2-135m-instruct", None))
    assert result.runtime == "llamacpp"
    assert (result.gpus_per_node, result.node_count, result.instance_type) == (0, 1, "")
    assert result.max_model_len == 4096
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--ctx-size") + 1] == str(4096 * 8)
    assert argv[argv.index("--parallel") + 1] == "8"
    assert "--tensor-parallel-size" not in argv


def test_cpu_preset_refuses_a_gpu_runtime() -> None:
    with pytest.raises(PlanError, match="runs on llamacpp, not vllm"):
        plan(workspace("smollm2-135m-instruct", None, annotations={"kaito.sh/runtime": "vllm"}))


def test_gpu_preset_needs_a_gpu() -> None:
    with pytest.raises(PlanError, match="needs a GPU"):
        plan(workspace("phi-4-mini-instruct", None))
    with pytest.raises(PlanError, match="Standard_D4s_v5 has no GPU"):
        plan(workspace("phi-4-mini-instruct", "Standard_D4s_v5"))


def test_transformers_runtime_from_the_annotation() -> None:
    result = plan(workspace(annotations={"kaito.sh/runtime": "transformers"}))
    assert result.runtime == "transformers"
    argv = to_argv(result.engine_args)
    assert "--continuous-batching" in argv
    assert argv[argv.index("--port") + 1] == "5000"
    assert "--tensor-parallel-size" not in argv


def test_transformers_runtime_refuses_several_nodes() -> None:
    with pytest.raises(PlanError, match="transformers runtime runs on one node"):
        plan_preset("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", runtime="transformers")


def test_unknown_names_raise_catalog_errors_with_suggestions() -> None:
    with pytest.raises(CatalogError) as caught:
        plan(workspace("phi-4-mini"))
    assert "phi-4-mini-instruct" in caught.value.suggestions
    with pytest.raises(CatalogError, match="unknown instance type"):
        plan(workspace(instance_type="Standard_NC40ads_H100"))


def test_template_workspaces_get_nodes_but_no_sizing() -> None:
    ws = Workspace.model_validate(
        {
            "metadata": {"name": "t"},
            "resource": {"instanceType": "Standard_NC48ads_A100_v4", "count": 2},
            "inference": {"template": {"spec": {}}},
        }
    )
    result = plan(ws)
    assert (result.runtime, result.total_nodes, result.gpus_per_node, result.engine_args) == (
        "template",
        2,
        2,
        (),
    )
    assert "runs as written on 2 x Standard_NC48ads_A100_v4" in result.explanation[0]


H100_NODE = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "2",
             "nvidia.com/gpu.memory": "81559", "pool": "gpu"}  # fmt: skip


def test_bring_your_own_nodes_from_labels() -> None:
    ws = workspace(instance_type=None, selector={"matchLabels": {"pool": "gpu"}})
    result = plan(ws, nodes=[H100_NODE, {"pool": "cpu"}])
    assert result.instance_type == ""
    assert result.gpus_per_node == 2
    assert result.gpu_model == "NVIDIA-H100-80GB-HBM3"
    assert result.memory.gpu_memory_gib == pytest.approx(81559 / 1024, abs=0.01)


def test_bring_your_own_nodes_too_few_for_the_model() -> None:
    ws = workspace("llama-3.3-70b-instruct", None, selector={"matchLabels": {"pool": "gpu"}})
    one_gpu = {**H100_NODE, "nvidia.com/gpu.count": "1"}
    with pytest.raises(PlanError, match=r"needs 3 nodes of 1 x NVIDIA-H100-80GB-HBM3.* only 1 matching node"):
        plan(ws, nodes=[one_gpu])
    assert plan(ws, nodes=[one_gpu] * 3).node_count == 3


def test_bring_your_own_nodes_none_match() -> None:
    ws = workspace(instance_type=None, selector={"matchLabels": {"pool": "gpu"}})
    with pytest.raises(PlanError, match="matches none of the nodes"):
        plan(ws, nodes=[{"pool": "cpu"}])


def test_bring_your_own_node_as_instance_type() -> None:
    node = InstanceType("box", "node", 1, "L40S", 48, 864)
    result = plan(workspace(instance_type=None), nodes=[node])
    assert (result.node_count, result.gpus_per_node, result.instance_type) == (1, 1, "")


def test_alternatives_smallest_first() -> None:
    preset = CATALOG.preset("llama-3.3-70b-instruct")
    found = alternatives(preset, CATALOG, cloud="azure", limit=4)
    sizes = [p.node_count * CATALOG.instance_types[p.instance_type].gpu_memory_gib for p in found]
    assert sizes == sorted(sizes)
    # 188 GiB either way: one node of 2 x H100 before two nodes of 1 x H100
    assert [p.instance_type for p in found][:2] == ["Standard_NC80adis_H100_v5", "Standard_NC40ads_H100_v5"]
    assert all(CATALOG.instance_types[p.instance_type].cloud == "azure" for p in found)
    assert alternatives(CATALOG.preset("smollm2-135m-instruct"), CATALOG) == []


def test_transformers_spreads_layers_over_the_node() -> None:
    result = plan_preset("phi-4", "Standard_NC96ads_A100_v4", runtime="transformers")
    assert (result.tensor_parallel, result.pipeline_parallel, result.data_parallel) == (1, 4, 1)
    assert result.memory.weights_gib == pytest.approx(27.31 * 1.02 / 4)
    assert any("spreads the layers over the node's 4 GPUs" in line for line in result.explanation)


def test_cpu_parallel_override_sizes_the_cache() -> None:
    result = plan(workspace("smollm2-135m-instruct", None), config={"llamacpp": {"parallel": 2}})
    assert result.kv_cache_tokens == 2 * 4096
    assert result.memory.kv_cache_gib == pytest.approx(2 * 4096 * 23040 / 2**30)
    argv = to_argv(result.engine_args)
    assert argv[argv.index("--ctx-size") + 1] == "8192"
    assert argv[argv.index("--parallel") + 1] == "2"


def test_bring_your_own_raw_node_objects() -> None:
    ws = workspace(
        instance_type=None,
        selector={"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]},
    )
    node = {
        "metadata": {
            "name": "gpu-1",
            "labels": {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        },
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }
    result = plan(ws, nodes=[node])
    assert (result.gpus_per_node, result.node_count) == (8, 1)
    assert result.memory.gpu_memory_gib == 80
