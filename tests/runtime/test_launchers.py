"""Building the vLLM and transformers command lines from planned arguments and ConfigMap overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykaito.errors import InputError
from pykaito.runtime import entry
from pykaito.runtime.entry import main
from pykaito.runtime.launchers.common import flatten, parse
from pykaito.runtime.launchers.gate import GateSettings
from pykaito.runtime.launchers.transformers import transformers_launch
from pykaito.runtime.launchers.vllm import MIDDLEWARE, vllm_launch

PLANNED = [
    "--model", "microsoft/Phi-4-mini-instruct",
    "--served-model-name", "phi-4-mini-instruct",
    "--download-dir", "/workspace/weights",
    "--dtype", "bfloat16",
    "--tensor-parallel-size", "1",
    "--max-model-len", "4096",
    "--gpu-memory-utilization", "0.84",
    "--trust-remote-code",
    "--tool-call-parser", "phi4_mini_json",
    "--enable-auto-tool-choice",
    "--max-num-seqs", "64",
    "--port", "5000",
    "--host", "0.0.0.0",
]  # fmt: skip
TAIL = ["--middleware", MIDDLEWARE, "--port", "5000"]


def test_vllm_argv_without_overrides() -> None:
    launch = vllm_launch(PLANNED, config=None)
    assert launch.argv == [
        "vllm", "serve", "microsoft/Phi-4-mini-instruct",
        "--served-model-name", "phi-4-mini-instruct",
        "--download-dir", "/workspace/weights",
        "--dtype", "bfloat16",
        "--tensor-parallel-size", "1",
        "--max-model-len", "4096",
        "--gpu-memory-utilization", "0.84",
        "--trust-remote-code",
        "--tool-call-parser", "phi4_mini_json",
        "--enable-auto-tool-choice",
        "--max-num-seqs", "64",
        "--host", "0.0.0.0",
        *TAIL,
    ]  # fmt: skip
    assert launch.env == {"KAITO_MAX_WAITING": "64"}


def test_vllm_overrides_from_the_mounted_config(tmp_path: Path) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text(
        "vllm:\n"
        "  max-model-len: 8192\n"  # replaces in place
        "  gpu_memory_utilization: 0.9\n"  # underscores are flag names too
        "  enable-prefix-caching: true\n"  # new switch, appended in sorted order
        "  trust-remote-code: false\n"  # removed
        "  kv-cache-dtype: fp8\n"  # new value, appended in sorted order
        "  max-num-seqs: 128\n"
        "  port: 8000\n"  # the launcher owns the port
        "transformers:\n"
        "  ignored: 1\n"
    )
    argv = vllm_launch(PLANNED, config=config).argv
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv.index("--max-model-len") == PLANNED.index("--max-model-len") + 1  # same place, after "serve"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    assert "--trust-remote-code" not in argv
    assert "--ignored" not in argv
    assert argv[-len(TAIL) - 3 :] == ["--enable-prefix-caching", "--kv-cache-dtype", "fp8", *TAIL]
    assert argv.count("--port") == 1 and argv[-1] == "5000"
    assert vllm_launch(PLANNED, config=config).env == {"KAITO_MAX_WAITING": "128"}
    assert vllm_launch(PLANNED, config=config).argv == argv  # deterministic


def test_vllm_model_positional_and_multi_valued_flags() -> None:
    planned = ["org/model", "--lora-modules", "a=/mnt/adapter/a", "b=/mnt/adapter/b", "--seed", "-1", "--x=y"]
    argv = vllm_launch(planned, overrides={}).argv
    assert argv == [
        "vllm", "serve", "org/model",
        "--lora-modules", "a=/mnt/adapter/a", "b=/mnt/adapter/b",
        "--seed", "-1",
        "--x", "y",
        *TAIL,
    ]  # fmt: skip
    assert vllm_launch(planned, overrides={}).env == {"KAITO_MAX_WAITING": "256"}
    assert vllm_launch(planned, overrides={"model": "other/model"}).argv[2] == "other/model"


@pytest.mark.parametrize(
    ("planned", "config_text", "message"),
    [
        pytest.param(["--dtype", "bfloat16"], None, "no model", id="no-model"),
        pytest.param(["m", "stray"], None, "not an option", id="stray-positional"),
        pytest.param(["m"], "vllm: [1, 2]\n", "mapping", id="section-not-mapping"),
        pytest.param(["m"], "- 1\n", "mapping", id="file-not-mapping"),
        pytest.param(["m"], "vllm: {a: [\n", "YAML", id="bad-yaml"),
        pytest.param(["m", "--max-num-seqs", "lots"], None, "whole number", id="bad-max-num-seqs"),
    ],
)
def test_vllm_launch_errors(
    tmp_path: Path, planned: list[str], config_text: str | None, message: str
) -> None:
    config = tmp_path / "inference_config.yaml"
    if config_text is not None:
        config.write_text(config_text)
    with pytest.raises(InputError, match=message):
        vllm_launch(planned, config=config)


def test_missing_or_empty_config_means_no_overrides(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    base = vllm_launch(["m"], config=None).argv
    assert vllm_launch(["m"], config=tmp_path / "absent.yaml").argv == base
    assert vllm_launch(["m"], config=empty).argv == base


def test_transformers_argv() -> None:
    planned = [
        "--force-model", "microsoft/Phi-4-mini-instruct", "--dtype", "bfloat16", "--device", "cuda",
        "--continuous-batching", "--host", "0.0.0.0", "--port", "5000",
    ]  # fmt: skip
    launch = transformers_launch(planned, config=None, weights_dir=Path("/nonexistent"), environ={})
    assert launch.argv == [
        "transformers", "serve", "microsoft/Phi-4-mini-instruct",
        "--dtype", "bfloat16", "--device", "cuda", "--continuous-batching",
        "--host", "127.0.0.1", "--port", "5001",  # behind the gate on 5000
    ]  # fmt: skip
    assert launch.env == {"HF_HUB_CACHE": "/nonexistent"}
    assert launch.gate == GateSettings(host="0.0.0.0", port=5000, api_key=None, max_in_flight=256)


def test_transformers_defaults_local_directory_and_overrides(tmp_path: Path) -> None:
    model_dir = tmp_path / "weights" / "org" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    config = tmp_path / "inference_config.yaml"
    config.write_text("transformers:\n  continuous-batching: false\n  compile: true\n  cb-num-blocks: 512\n")
    launch = transformers_launch(
        ["org/model"], config=config, weights_dir=tmp_path / "weights", environ={"HF_HOME": "/cache"}
    )
    assert launch.argv == [
        "transformers", "serve", str(model_dir),
        "--device", "cuda", "--dtype", "auto",
        "--cb-num-blocks", "512", "--compile",
        "--host", "127.0.0.1", "--port", "5001",
    ]  # fmt: skip
    assert launch.env == {}


def test_transformers_gate_takes_the_key_and_limit_from_the_environment() -> None:
    launch = transformers_launch(
        ["m"], config=None, environ={"KAITO_API_KEY": "k", "KAITO_MAX_IN_FLIGHT": "8"}
    )
    assert launch.gate is not None
    assert (launch.gate.api_key, launch.gate.max_in_flight) == ("k", 8)
    assert "# gate on 0.0.0.0:5000 (API key required, at most 8 generations in flight) in front of:" in (
        launch.describe()
    )
    with pytest.raises(InputError, match="KAITO_MAX_IN_FLIGHT"):
        transformers_launch(["m"], config=None, environ={"KAITO_MAX_IN_FLIGHT": "lots"})


def test_parse_keeps_switches_and_values() -> None:
    assert parse(["--a", "1", "--b", "--c=d", "--e", "-0.5"]) == (
        None,
        [("--a", "1"), ("--b", None), ("--c", "d"), ("--e", "-0.5")],
    )


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point configures the root logger; tests keep pytest's handlers instead."""
    monkeypatch.setattr(entry, "configure_logging", lambda level="info": None)


def test_entry_point_prints_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("vllm:\n  max-model-len: 2048\n")
    main(["vllm", "--inference-config", str(config), "--print-command", *PLANNED])
    env_line, command = capsys.readouterr().out.strip().splitlines()
    assert env_line == "KAITO_MAX_WAITING=64"
    assert command.startswith(
        "vllm serve microsoft/Phi-4-mini-instruct --served-model-name phi-4-mini-instruct"
    )
    assert "--max-model-len 2048" in command
    assert command.endswith(f"--middleware {MIDDLEWARE} --port 5000")

    main(["transformers", "--print-command", "--inference-config", str(tmp_path / "none"), "org/m"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("transformers serve org/m ")


def test_entry_point_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["vllm", "--print-command", "--dtype", "bfloat16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pykaito-runtime: error: no model to serve")
    assert len(err.strip().splitlines()) == 1


def test_exec_of_a_missing_engine_is_a_clear_error() -> None:
    launch = vllm_launch(["m"], config=None)
    missing = type(launch)(["pykaito-no-such-engine-binary", *launch.argv[1:]], launch.env)
    with pytest.raises(InputError, match="not installed in this image"):
        missing.exec()


def test_json_log_lines() -> None:
    import json
    import logging

    record = logging.LogRecord("pykaito.runtime", logging.INFO, __file__, 1, "ready in %d s", (3,), None)
    line = json.loads(entry.JsonFormatter().format(record))
    assert line["level"] == "info"
    assert line["logger"] == "pykaito.runtime"
    assert line["message"] == "ready in 3 s"


def _planned(instance_type: str) -> list[str]:
    from pykaito.api.types import Workspace
    from pykaito.planner import plan

    workspace = Workspace.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "ws"},
            "resource": {"instanceType": instance_type},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
    )
    result = plan(workspace)
    return flatten(list(result.engine_args))


def test_data_parallel_runs_one_api_server_whose_limit_covers_every_rank() -> None:
    planned = _planned("Standard_NC80adis_H100_v5")  # two H100s: data parallel 2
    assert planned[planned.index("--data-parallel-size") + 1] == "2"
    launch = vllm_launch(planned, config=None)
    argv = launch.argv
    assert argv[argv.index("--api-server-count") + 1] == "1"
    assert argv.count("--api-server-count") == 1
    seqs = int(argv[argv.index("--max-num-seqs") + 1])
    # the one API server's waiting gauge sums both engines' queues: the limit is per rank x ranks
    assert launch.env == {"KAITO_MAX_WAITING": str(2 * seqs)}


def test_one_rank_renders_no_api_server_count() -> None:
    launch = vllm_launch(_planned("Standard_NC40ads_H100_v5"), config=None)
    assert "--data-parallel-size" not in launch.argv
    assert "--api-server-count" not in launch.argv


def test_the_inference_config_cannot_start_more_api_servers(tmp_path: Path) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text("vllm:\n  api-server-count: 4\n  data-parallel-size: 4\n")
    launch = vllm_launch(["m", "--max-num-seqs", "8"], config=config)
    argv = launch.argv
    assert argv[argv.index("--api-server-count") + 1] == "1"
    assert argv.count("--api-server-count") == 1
    assert launch.env == {"KAITO_MAX_WAITING": "32"}


def test_bad_data_parallel_size_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="data-parallel-size"):
        vllm_launch(["m", "--data-parallel-size", "two"], config=None)
