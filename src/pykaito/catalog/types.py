"""Catalog values: model presets and instance types (frozen, read from the YAML data files)."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GgufSource:
    """A quantized GGUF of a preset on the Hugging Face hub, for the CPU engine (llama.cpp).

    ``size`` (bytes) and ``sha256`` are the file's as the hub lists them at ``revision``; either may be
    unknown (``None``), and then a pull checks the file against the hub's own checksum instead.
    ``verified`` is true only when both were computed from the file itself by a source this project
    can check (the embedded model); otherwise they are recorded from public manifests, and a pull
    also requires the hub's checksum to agree (``kaito pull --require-checksum`` refuses them).
    """

    repo: str
    file: str
    quantization: str
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None
    verified: bool = False


@dataclass(frozen=True)
class ModelPreset:
    """A model pykaito knows how to size and serve.

    ``size_gib`` is the size of the weight files; ``kv_bytes_per_token`` the KV-cache bytes one
    token takes at bf16 across all layers (2 x kv_heads x head_dim x layers x 2). ``revision`` pins
    the weights to one commit of the Hugging Face repo (the one upstream KAITO pins the preset to),
    so a rollout, a new replica and the weight cache all serve the same files.
    """

    name: str
    model_id: str
    size_gib: float
    context_length: int
    kv_bytes_per_token: int
    params_billion: float | None = None
    layers: int | None = None
    attention_heads: int | None = None
    kv_heads: int | None = None
    hidden_size: int | None = None
    head_dim: int | None = None
    dtype: str = "bfloat16"
    download_token_required: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    chat_template: str | None = None
    tokenizer_mode: str | None = None
    mistral_format: bool = False  # weights, config and tokenizer in Mistral's own format
    runtimes: tuple[str, ...] = ("vllm", "transformers")
    license: str = ""
    deprecated: bool = False
    description: str = ""
    gguf: str | None = None  # where the GGUF comes from for llamacpp presets ("embedded" or a path)
    cpu_gguf: GgufSource | None = None  # the quantized GGUF `kaito pull` fetches for the CPU engine
    source: str = "catalog"  # "catalog", "huggingface" or "local"
    revision: str = ""  # the Hugging Face commit the preset is pinned to ("": the repo's main branch)

    @property
    def cpu_only(self) -> bool:
        return self.runtimes == ("llamacpp",)

    @property
    def served_name(self) -> str:
        """The name upstream KAITO serves the model under: the Hugging Face id's last part, lowercased."""
        return self.model_id.rstrip("/").rsplit("/", 1)[-1].lower()

    @property
    def served_names(self) -> tuple[str, ...]:
        """Every name the model answers to: the preset name first, then upstream's served name."""
        return tuple(dict.fromkeys((self.name, self.served_name)))

    @property
    def default_runtime(self) -> str:
        return self.runtimes[0]

    @property
    def disk_gib(self) -> float:
        """Disk a node needs for the weights plus room for the image and caches."""
        return self.size_gib + 80.0


@dataclass(frozen=True)
class InstanceType:
    """A machine type: how many GPUs, which, and how much GPU memory per node.

    ``gpu_memory_gib`` is the total over the node's GPUs; ``memory_bandwidth_gbs`` is per GPU in GB/s.
    CPU-only types have ``gpu_count == 0``.
    """

    name: str
    cloud: str
    gpu_count: int
    gpu_model: str
    gpu_memory_gib: float
    memory_bandwidth_gbs: float
    gpu_memory_utilization: float = 0.84
    vcpus: int | None = None
    memory_gib: float | None = None
    nvlink: bool = False
    description: str = ""

    @property
    def per_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib / self.gpu_count if self.gpu_count else 0.0

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0
