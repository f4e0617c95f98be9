"""The CPU engine: llama.cpp in-process with the project's own continuous batching.

One dedicated thread owns the llama.cpp context and runs the decode loop:

    admit waiting requests into free slots (a slot is a KV-cache sequence id; the slot whose
        cache already holds the longest prefix of the prompt, which is then skipped)
    plan one step: a token for every decoding sequence plus a chunk of prompt tokens
    llama_decode(the whole step)            # one call, all running sequences
    pick each sequence's token: one argmax over the logits rows for plain greedy requests,
        the request's own native sampler chain (llama_sampler_sample) for the rest; a draft
        token is kept while greedy decoding would pick it, or for a sampled request by the
        speculative sampling rule (``pykaito.runtime.speculative``)
    hand the new text to each request's asyncio queue (a LoopWaker post, once per loop)

llama.cpp releases the GIL while it computes, so the event loop stays responsive. Every decode
runs on the decode thread, the timing of verification steps at start-up included: llama.cpp's CPU
backend keeps a team of worker threads for each thread that decodes, and a second team slows
every step. The scheduling rules live in ``pykaito.runtime.scheduler``, the drafts' in
``pykaito.runtime.speculative`` and stop-string handling in ``pykaito.runtime.text``; this module
is the llama.cpp edge.

Each delta's ``token_ids`` lists the tokens generated since the previous delta (text held
back for a possible stop string or an incomplete character is sent with a later delta),
so the sum over a stream is the completion token count, the end-of-generation token included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pykaito.errors import EngineError, PromptTooLongError
from pykaito.runtime.engine import (
    ChatMessage,
    ChatTemplateError,
    Delta,
    EngineStats,
    FinishReason,
    GenerationRequest,
    Health,
    SamplingDefaults,
    SamplingParams,
    TokenLogprob,
)
from pykaito.runtime.engines.llamacpp_native import (
    Candidates,
    NativeBatch,
    build_sampler,
    is_plain_greedy,
    measure_cost_curve,
    request_rng,
)
from pykaito.runtime.engines.loopwake import LoopWaker, waker_registry
from pykaito.runtime.scheduler import DraftStep, Scheduler, SequenceState, StepEntry
from pykaito.runtime.speculative import (
    MAX_DRAFT,
    MAX_MATCH,
    MAX_SPECULATING,
    STEP_DRAFT_BUDGET,
    AcceptanceLog,
    CostCurve,
    DraftLength,
    DraftPool,
    MatchAcceptance,
    NgramIndex,
    SpecCounters,
    accept_or_resample,
    log_cost_curve,
    sampling_probs,
)
from pykaito.runtime.text import TextStream

log = logging.getLogger(__name__)
native_log = logging.getLogger(__name__ + ".native")

CONTEXT_PER_SLOT = 2048
MAX_DEFAULT_THREADS = 8
SPECULATIVE_MODES = ("off", "ngram")


def default_threads() -> int:
    """Physical cores this process may run on (CPU affinity, SMT siblings counted once), at most 8."""
    cpus = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", str(cpu)))
            continue
        cores.add((package, core))
    return max(1, min(MAX_DEFAULT_THREADS, len(cores) or len(cpus)))


@dataclass(frozen=True)
class LlamaCppSettings:
    """How the llama.cpp engine loads and serves a GGUF model."""

    model_path: Path
    n_ctx: int = 0  # KV-cache cells for all slots together; 0 = max_running x 2048
    max_running: int = 8  # parallel sequences (slots)
    max_waiting: int = 64  # queued requests before QueueFullError
    threads: int = 0  # 0 = physical cores available, at most 8
    batch_size: int = 512  # tokens per decode step, at most
    prompt_chunk: int = 256  # prompt tokens per decode step, at most
    prefix_cache: bool = True  # reuse a finished request's KV cache for a prompt that starts alike
    served_model_name: str = ""  # "" = the file name without .gguf
    chat_template: str = ""  # a Jinja chat template to use instead of the GGUF's (tokenizer.chat_template)
    speculative: str = "ngram"  # requests verify drafts from their own and earlier requests' tokens; "off"
    max_draft: int = MAX_DRAFT  # draft tokens per sequence and step, at most
    # what a draft token adds to a step's decode time, which decides how long drafts pay for
    # themselves; None: steps of 1 to max_draft + 1 tokens are timed when the model loads;
    # a number: each token after the first costs that share of a one-token step (0: free)
    draft_cost: float | None = None

    @property
    def total_context(self) -> int:
        return self.n_ctx or self.max_running * CONTEXT_PER_SLOT


@dataclass(eq=False)
class _Request:
    """What the decode thread keeps for one request besides the scheduler's bookkeeping."""

    params: SamplingParams
    sampler: Any  # llama_sampler_p, owned and freed by the decode thread; built there for a grammar
    text: TextStream
    waker: LoopWaker  # delivers deltas to the event loop of the request's caller
    queue: asyncio.Queue[Delta | BaseException]
    greedy: bool = False  # plain argmax: no sampler call per token
    n_generated: int = 0
    announced: bool = False  # the first delta (which reports the cached prompt tokens) was sent
    pending_ids: list[int] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    ngrams: NgramIndex | None = None  # this sequence's prompt and generated tokens; None: no drafts
    draft_length: DraftLength = field(default_factory=DraftLength)
    rng: np.random.Generator | None = None  # a speculating sampled request's draws for its drafts


_Seq = SequenceState[_Request]
_Outbox = dict[LoopWaker, list[tuple["asyncio.Queue[Delta | BaseException]", Any]]]


class _Stream:
    """The async iterator ``generate`` returns; closing it early cancels the request."""

    def __init__(self, engine: LlamaCppEngine, seq: _Seq) -> None:
        self._engine = engine
        self._seq = seq
        self._done = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._seq.payload.queue.get()
        except BaseException:
            self._close()
            raise
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._engine._scheduler.cancel(self._seq)

    def __del__(self) -> None:
        # A finalizer may run on any thread, that one holding the scheduler's lock included:
        # hand the cancellation to the decode thread instead of taking the lock here.
        if not self._done:
            self._done = True
            self._engine._scheduler.abandon(self._seq)


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's low-level API, one decode step for all sequences."""

    def __init__(self, settings: LlamaCppSettings) -> None:
        if settings.max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {settings.max_running}")
        if settings.speculative not in SPECULATIVE_MODES:
            raise ValueError(
                f"speculative must be one of {', '.join(SPECULATIVE_MODES)}, got {settings.speculative!r}"
            )
        self.settings = settings
        self._threads = settings.threads or default_threads()
        self._scheduler: Scheduler[_Request] = Scheduler(
            max_running=settings.max_running,
            max_waiting=settings.max_waiting,
            prompt_chunk=settings.prompt_chunk,
            batch_size=max(settings.batch_size, settings.max_running + 1),
            prefix_cache=settings.prefix_cache,
        )
        self._lib: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._memory: Any = None
        self._n_vocab = 0
        self._n_ctx_seq = settings.total_context // settings.max_running
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._template: Any = None
        self._template_source = ""
        self._sampling_defaults = SamplingDefaults()
        self._bos_text = ""
        self._eos_text = ""
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._health = Health(ready=False, reason="the model is not loaded yet")
        self._log_callback: Any = None
        self._progress_callback: Any = None
        self._abort_load = threading.Event()  # set when start() is cancelled: loading stops early
        self._batch: NativeBatch | None = None
        self._candidates: Candidates | None = None  # a sampled request's distribution at a draft token
        self._waker_for = waker_registry()
        self.moves = 0  # sequences moved to a lower slot to keep the running slots contiguous
        # one per-position counter for each position a draft can reach (the step's budget caps a draft)
        self.spec = SpecCounters(accepted_per_pos=[0] * max(1, min(settings.max_draft, STEP_DRAFT_BUDGET)))
        # a step's decode time by its token count: measured at load unless the settings give a cost
        self.cost_curve = CostCurve.linear(settings.draft_cost or 0.0)
        self._acceptance_log = AcceptanceLog(self.spec)
        self._match_acceptance = MatchAcceptance()  # decode thread only
        # finished requests' tokens, drafted from by later ones; off with the prefix cache, since a
        # repeated request then decodes faster than a new one, as a cached prefix makes it start sooner
        self._pool = DraftPool() if settings.prefix_cache else DraftPool(max_sequences=0)

    # -- Engine protocol -------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.settings.served_model_name or self.settings.model_path.name.removesuffix(".gguf")

    @property
    def max_model_len(self) -> int:
        return self._n_ctx_seq

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        return self._sampling_defaults

    def health(self) -> Health:
        return self._health

    def stats(self) -> EngineStats:
        running = self._scheduler.running
        return EngineStats(
            running=running,
            waiting=self._scheduler.waiting,
            max_running=self.settings.max_running,
            max_waiting=self.settings.max_waiting,
            kv_cache_usage=self._kv_usage(),
            spec_decode=self.spec.stats() if self.settings.speculative != "off" else None,
        )

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        lib, vocab = self._loaded()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (lib.llama_token * capacity)()
        n = lib.llama_tokenize(vocab, data, len(data), tokens, capacity, add_special, True)
        if n < 0:
            capacity = -n
            tokens = (lib.llama_token * capacity)()
            n = lib.llama_tokenize(vocab, data, len(data), tokens, capacity, add_special, True)
        if n < 0:
            raise EngineError(f"llama.cpp could not tokenize a text of {len(data)} bytes")
        return list(tokens[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        lib, vocab = self._loaded()
        self._check_ids(tokens, "token ids")
        arr = (lib.llama_token * len(tokens))(*tokens)
        size = max(64, 8 * len(tokens))
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_detokenize(vocab, arr, len(tokens), buf, size, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n
        raise EngineError(f"llama.cpp could not detokenize {len(tokens)} tokens")

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        if self._template is None:
            self._loaded()
            raise ChatTemplateError(
                f"the model {self.model_name} has no chat template (tokenizer.chat_template): "
                "use the completions API or a model with a template"
            )
        import jinja2

        context: dict[str, Any] = {
            "messages": [{**m.extra, "role": m.role, "content": m.content} for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self._bos_text,
            "eos_token": self._eos_text,
        }
        if tools:
            context["tools"] = list(tools)
        try:
            rendered = self._template.render(**context)
        except ChatTemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise EngineError(f"the chat template of {self.model_name} failed: {exc}") from exc
        return str(rendered)

    def supports_tools(self) -> bool:
        return "tools" in self._template_source

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if not self._accepting:
            raise EngineError(f"the engine is not serving: {self._health.reason or 'stopped'}")
        params = request.params
        n_prompt = len(request.prompt_tokens)
        if n_prompt == 0:
            raise ValueError("the prompt is empty: send at least one token")
        self._check_ids(request.prompt_tokens, "prompt token ids")
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {params.max_tokens}")
        if n_prompt >= self._n_ctx_seq:
            raise PromptTooLongError(
                f"the prompt has {n_prompt} tokens but {self.model_name} serves at most "
                f"{self._n_ctx_seq} tokens per request (prompt and completion): shorten the prompt "
                "or give the engine a larger n_ctx",
                prompt_tokens=n_prompt,
                max_model_len=self._n_ctx_seq,
            )
        loop = asyncio.get_running_loop()
        # a grammar is compiled on the decode thread when the request is admitted, not on the event loop
        sampler = None if params.grammar else build_sampler(self._lib, self._vocab, self._n_vocab, params)
        greedy = is_plain_greedy(params)
        speculate = params.speculative and self.settings.speculative == "ngram"
        payload = _Request(
            params,
            sampler,
            TextStream(params.stop),
            self._waker_for(loop),
            asyncio.Queue(),
            greedy,
            ngrams=NgramIndex() if speculate else None,
            draft_length=DraftLength(max_draft=self.settings.max_draft),
            rng=request_rng(params) if speculate and not greedy else None,
        )
        seq: _Seq = SequenceState(request.request_id, list(request.prompt_tokens), payload)
        try:
            self._scheduler.submit(seq)
        except BaseException:
            if sampler is not None:
                self._lib.llama_sampler_free(sampler)
            raise
        return _Stream(self, seq)

    async def start(self) -> None:
        if self._thread is not None:
            return
        if self._health.reason == "stopped":
            raise EngineError("this engine was stopped and cannot start again: create a new LlamaCppEngine")
        self._health = Health(ready=False, reason="loading the model")
        loading = asyncio.ensure_future(asyncio.to_thread(self._load))
        try:
            await asyncio.shield(loading)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: tell llama.cpp to give up and wait until the load
            # thread is done, so that stop() never frees the model while that thread still uses it.
            self._abort_load.set()
            while not loading.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([loading])
            if not loading.cancelled():
                loading.exception()  # "loading was cancelled", or none: nothing to report
            self._health = Health(ready=False, reason="loading was cancelled")
            raise
        except BaseException as exc:
            self._health = Health(ready=False, reason=f"the model failed to load: {exc}")
            raise
        capacity = max(self.settings.batch_size, self.settings.max_running + 1)
        self._batch = NativeBatch(self._lib, capacity, self._n_ctx_seq)
        self._candidates = Candidates(self._lib, self._n_vocab)
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="llamacpp-decode", daemon=True)
        self._thread.start()
        self._health = Health(ready=False, reason="warming up")
        warmup = GenerationRequest(
            "warmup", self.tokenize("Hello"), SamplingParams(max_tokens=2, temperature=0)
        )
        async for _ in self.generate(warmup):
            pass
        self._health = Health(ready=True)
        log.info(
            "llama.cpp engine ready: %s, %d slots x %d tokens, %d threads",
            self.model_name,
            self.settings.max_running,
            self._n_ctx_seq,
            self._threads,
        )

    async def stop(self) -> None:
        self._accepting = False
        self._health = Health(ready=False, reason="stopped")
        left = self._scheduler.close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for seq in left:
            self._release(seq)
            if not seq.cancelled:
                self._post(seq, EngineError("the engine stopped before the request finished"))
        self._memory = None
        self._vocab = None
        self._batch = None
        self._candidates = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            self._lib.llama_model_free(self._model)
            self._model = None

    def _check_ids(self, tokens: Sequence[int], what: str) -> None:
        n_vocab = self._n_vocab
        if tokens and n_vocab and (min(tokens) < 0 or max(tokens) >= n_vocab):
            bad = min(tokens) if min(tokens) < 0 else max(tokens)
            raise ValueError(f"{what} must lie in 0..{n_vocab - 1} for {self.model_name}; got {bad}")

    # -- loading ---------------------------------------------------------------------------

    def _loaded(self) -> tuple[Any, Any]:
        if self._vocab is None:
            raise EngineError("the engine has not loaded its model yet: await engine.start() first")
        return self._lib, self._vocab

    def _load(self) -> None:
        import llama_cpp

        lib = llama_cpp
        self._lib = lib
        self._install_log_callback()
        lib.llama_backend_init()
        path = self.settings.model_path
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist: pass the path of a .gguf file")
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # llama.cpp asks this as it reads the tensors; False stops the load (start() was cancelled)
        self._progress_callback = lib.llama_progress_callback(lambda _p, _u: not self._abort_load.is_set())
        mparams.progress_callback = self._progress_callback
        model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not model and self._abort_load.is_set():
            raise EngineError("loading was cancelled")
        if not model:
            raise EngineError(f"llama.cpp could not load {path}: is it a valid GGUF file?")
        self._model = model
        self._vocab = lib.llama_model_get_vocab(model)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        train_ctx = lib.llama_model_n_ctx_train(model)
        per_slot = self.settings.total_context // self.settings.max_running
        if train_ctx > 0 and per_slot > train_ctx:
            per_slot = train_ctx
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = per_slot * self.settings.max_running
        batch = max(self.settings.batch_size, self.settings.max_running + 1)
        cparams.n_batch = batch
        cparams.n_ubatch = batch
        cparams.n_seq_max = self.settings.max_running
        cparams.n_outputs_max = self.settings.max_running + STEP_DRAFT_BUDGET
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.no_perf = True
        cparams.kv_unified = False
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            raise EngineError(
                f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {path}: "
                "lower n_ctx or max_running"
            )
        self._ctx = ctx
        self._memory = lib.llama_get_memory(ctx)
        self._n_ctx_seq = lib.llama_n_ctx_seq(ctx)
        self._load_template()

    def _measure_cost_curve(self) -> None:
        """How long steps of 1 to ``max_draft + 1`` tokens decode here, so drafts run only where they pay.

        Run on the decode thread: llama.cpp's CPU backend keeps a team of worker threads for each
        thread that decodes, and a team left behind by another thread slows every later step.
        """
        longest = max(1, min(self.settings.max_draft, STEP_DRAFT_BUDGET)) + 1
        token = max(0, self._lib.llama_vocab_bos(self._vocab))
        points = measure_cost_curve(self._lib, self._ctx, self._memory, longest, token)
        if points is None:
            log.warning("could not time a verification step: drafts are taken as free")
            return
        self.cost_curve = CostCurve(points)
        log_cost_curve(self.cost_curve, self.settings.max_draft)

    def _install_log_callback(self) -> None:
        lib = self._lib
        # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues a line)
        levels = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}

        def forward(level: int, text: bytes, _user: Any) -> None:
            lvl = levels.get(level, logging.DEBUG)
            if native_log.isEnabledFor(lvl) and text:
                native_log.log(lvl, "%s", text.decode("utf-8", errors="replace").rstrip())

        self._log_callback = lib.llama_log_callback(forward)
        lib.llama_log_set(self._log_callback, ctypes.c_void_p(0))

    def _meta(self, key: str) -> str | None:
        size = 1 << 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1
        return None

    def _load_template(self) -> None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self._sampling_defaults = self._read_sampling_defaults()
        source = self.settings.chat_template or self._meta("tokenizer.chat_template")
        vocab, lib = self._vocab, self._lib
        bos, eos = lib.llama_vocab_bos(vocab), lib.llama_vocab_eos(vocab)
        self._bos_text = self._piece(bos, special=True).decode("utf-8", errors="replace") if bos >= 0 else ""
        self._eos_text = self._piece(eos, special=True).decode("utf-8", errors="replace") if eos >= 0 else ""
        if not source:
            return

        def raise_exception(message: str) -> None:
            raise ChatTemplateError(f"the chat template refused the conversation: {message}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.globals["raise_exception"] = raise_exception
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            log.warning("the chat template of %s cannot be compiled (%s): chat is off", self.model_name, exc)
            return
        self._template_source = source

    def _read_sampling_defaults(self) -> SamplingDefaults:
        """The model's recommended sampling from its GGUF metadata (``general.sampling.*``).

        Without any, llama.cpp's usual chain.
        """
        base = SamplingDefaults()
        found: dict[str, float] = {}
        for name in ("temp", "top_p", "top_k", "min_p"):
            raw = self._meta(f"general.sampling.{name}")
            if raw is None:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            if math.isfinite(value) and value >= 0:
                found[name] = value
        if not found:
            return base
        return SamplingDefaults(
            temperature=min(2.0, found.get("temp", base.temperature)),
            top_p=min(1.0, found.get("top_p", base.top_p)) or base.top_p,
            top_k=int(found.get("top_k", base.top_k)),
            min_p=min(1.0, found.get("min_p", base.min_p)),
            source="the model's GGUF metadata (general.sampling)",
        )

    # -- the decode thread -----------------------------------------------------------------

    def _run(self) -> None:
        scheduler = self._scheduler
        try:
            if self.settings.speculative != "off" and self.settings.draft_cost is None:
                self._measure_cost_curve()
            while scheduler.wait_for_work(0.5) or self._accepting:
                scheduler.admit(self._release, self._move, self._prepare)
                entries = scheduler.plan(
                    self._propose, max_speculating=MAX_SPECULATING, draft_budget=STEP_DRAFT_BUDGET
                )
                if entries:
                    self._step(entries)
                    self._acceptance_log.maybe_log()
        except BaseException as exc:
            log.exception("the llama.cpp decode loop failed")
            self._accepting = False
            self._health = Health(ready=False, reason=f"the decode loop failed: {exc}")
            for seq in self._scheduler.close():
                self._release(seq)
                if not seq.cancelled:
                    self._post(seq, EngineError(f"the llama.cpp decode loop failed: {exc}"))

    def _step(self, entries: list[StepEntry[_Request]]) -> None:
        lib, ctx = self._lib, self._ctx
        assert self._batch is not None
        outputs = self._batch.fill(entries)
        rc = lib.llama_decode(ctx, self._batch.struct)
        if rc != 0:
            for entry in entries:
                self._fail(entry.seq, EngineError(f"llama_decode failed with status {rc}"))
            return
        outbox: _Outbox = {}
        rows = self._logits_rows(entries, outputs)
        row = 0
        for entry, index in zip(entries, outputs, strict=True):
            seq = entry.seq
            if index < 0:
                seq.n_past += len(entry.tokens)
                continue
            if entry.drafted:
                self._verify(entry, index, rows, row, outbox)
            else:
                seq.n_past += len(entry.tokens)
                if not seq.cancelled:
                    token = int(rows[row].argmax()) if seq.payload.greedy and rows is not None else None
                    self._sample(seq, index, token, outbox)
            row += 1 + entry.drafted
        self._deliver_all(outbox)

    def _propose(self, seq: _Seq, step: DraftStep) -> list[int]:
        """Draft tokens for a sequence: what followed the longest earlier match of its latest tokens.

        The match is looked up in the sequence's own tokens and in recently finished requests'
        (the pool); the longer wins. The draft is as long as the sequence's ``DraftLength``
        expects to pay off on this step, given the match's length and the step's tokens so far.
        """
        req = seq.payload
        ngrams = req.ngrams
        if ngrams is None or seq.cancelled:
            return []
        if step.sequences > 1 and step.drafted:
            # llama.cpp decodes a step whose sequences bring unequal token counts as several
            # micro-batches, one more for each other draft length: one draft a step keeps it at two
            return []
        room = min(step.left, req.params.max_tokens - req.n_generated - 1, self._n_ctx_seq - seq.n_past - 2)
        if room <= 0:
            return []
        self._sync_ngrams(seq)
        source, found = ngrams, ngrams.find(ngrams.tokens)
        # A seeded sampled request drafts from its own tokens with fixed priors only: its drafts,
        # and so the random numbers its checks draw, then depend on nothing other requests did,
        # and the same seed repeats the reply.
        seeded = req.rng is not None and req.params.seed is not None
        own = found[1] if found else 0
        pooled = None if seeded or own >= MAX_MATCH else self._pool.find(ngrams.tokens, longer_than=own)
        if pooled is not None:
            source, found = pooled[0], pooled[1:]
        if found is None:
            req.draft_length.rest()
            return []
        start, match = found
        prior = MatchAcceptance.prior(match) if seeded else self._match_acceptance.estimate(match)
        length, gain = req.draft_length.choose(room, prior, self.cost_curve, step, match)
        if length <= 0:
            req.draft_length.rest()
            return []
        req.draft_length.match = match
        step.expected += gain
        return source.continuation(start, length)

    def _sync_ngrams(self, seq: _Seq) -> None:
        """Bring the sequence's n-gram index up to its prompt and the tokens generated so far."""
        ngrams = seq.payload.ngrams
        assert ngrams is not None
        n_prompt, have = len(seq.prompt), len(ngrams.tokens)
        if have < n_prompt:
            ngrams.extend(seq.prompt[have:])
            have = n_prompt
        ngrams.extend(seq.generated[have - n_prompt :])

    def _verify(self, entry: StepEntry[_Request], index: int, rows: Any, row: int, outbox: _Outbox) -> None:
        """Keep the draft's longest prefix the request's own decoding confirms, and its token after it.

        Logits row ``row + i`` follows the step's token ``i``. For a plain greedy request its
        argmax is what greedy decoding picks there, and draft token ``i + 1`` stands while it
        equals that pick. Any other request decides by the speculative sampling rule over its
        own sampling distribution (``_pick``). The first token that is not the draft's (or the
        one after the whole draft) is the model's own next token. Every token taken goes through
        ``_take`` as in a plain step, so stop strings, max_tokens and logprobs cut exactly where
        they would; the rejected tail leaves the KV cache.
        """
        seq, req = entry.seq, entry.seq.payload
        draft = entry.tokens[1:]
        seq.n_past = entry.start_pos + 1
        if not seq.cancelled:
            accepted = 0
            text, finish = "", None
            for i in range(entry.drafted + 1):
                proposed = draft[i] if i < entry.drafted else None
                token = int(rows[row + i].argmax()) if req.greedy else self._pick(req, index + i, proposed)
                piece, finish = self._take(seq, index + i, token)
                text += piece
                if finish is not None or proposed is None or token != proposed:
                    break
                seq.n_past += 1  # the confirmed draft token already sits in the KV cache
                accepted += 1
            self._emit(seq, text, finish, outbox)
            req.draft_length.update(entry.drafted, accepted)
            self._match_acceptance.update(req.draft_length.match, entry.drafted, accepted)
            self.spec.record(entry.drafted, accepted)
        if seq.n_past < entry.start_pos + len(entry.tokens):
            self._lib.llama_memory_seq_rm(self._memory, seq.slot, seq.n_past, -1)

    def _pick(self, req: _Request, index: int, proposed: int | None) -> int:
        """A sampled (or penalised, or grammar-bound) request's token at output ``index``.

        With no draft token there, its sampler chain draws one as in a plain step. Otherwise the
        chain's transforms give the distribution ``p`` it would draw from, and the draft token
        stands with probability ``p(proposed)``, else one is drawn from the rest of ``p``
        (``accept_or_resample``); the chain then accepts the token, as ``llama_sampler_sample`` does.
        """
        lib = self._lib
        if proposed is None:
            return int(lib.llama_sampler_sample(req.sampler, self._ctx, index))
        assert self._candidates is not None and req.rng is not None
        ids, logits = self._candidates.transform(req.sampler, lib.llama_get_logits_ith(self._ctx, index))
        probs = sampling_probs(logits, greedy=req.params.temperature <= 0)
        token, _ = accept_or_resample(ids, probs, proposed, req.rng)
        lib.llama_sampler_accept(req.sampler, token)
        return token

    def _logits_rows(self, entries: list[StepEntry[_Request]], outputs: list[int]) -> Any:
        """The last step's logits, one row per output, if a greedy request takes its argmax; else None."""
        if not any(i >= 0 and e.seq.payload.greedy for e, i in zip(entries, outputs, strict=True)):
            return None
        n_rows = sum(1 + e.drafted for e, i in zip(entries, outputs, strict=True) if i >= 0)
        return np.ctypeslib.as_array(self._lib.llama_get_logits(self._ctx), shape=(n_rows, self._n_vocab))

    def _sample(self, seq: _Seq, index: int, token: int | None, outbox: _Outbox) -> None:
        """Take the step's token for ``seq`` (``token``, or one its sampler draws) and pass on its text."""
        if token is None:
            token = self._lib.llama_sampler_sample(seq.payload.sampler, self._ctx, index)
        text, finish = self._take(seq, index, token)
        self._emit(seq, text, finish, outbox)

    def _take(self, seq: _Seq, index: int, token: int) -> tuple[str, FinishReason | None]:
        """Add one generated token to ``seq``: its new text and whether the sequence ends with it."""
        lib, req = self._lib, seq.payload
        req.n_generated += 1
        req.pending_ids.append(token)
        if req.params.logprobs is not None:
            req.pending_logprobs.append(self._logprob(index, token, req.params.logprobs))
        finish: FinishReason | None = None
        if lib.llama_vocab_is_eog(self._vocab, token) and not req.params.ignore_eos:
            text, finish = req.text.flush(), "stop"
        else:
            text, stopped = req.text.push(self._piece(token))
            if stopped:
                finish = "stop"
            elif req.n_generated >= req.params.max_tokens or seq.n_past + 1 >= self._n_ctx_seq:
                text += req.text.flush()
                finish = "length"
            else:
                seq.feed(token)
        if finish is not None:
            seq.next_token = None
            self._scheduler.finish(seq)
            if req.ngrams is not None:
                self._sync_ngrams(seq)
                self._pool.add(req.ngrams)
                req.ngrams = None
        return text, finish

    def _emit(self, seq: _Seq, text: str, finish: FinishReason | None, outbox: _Outbox) -> None:
        """Queue a delta with the text and tokens taken since the last one (none while no text is due)."""
        req = seq.payload
        if text or finish is not None:
            cached = 0 if req.announced else seq.cached
            req.announced = True
            delta = Delta(text, tuple(req.pending_ids), tuple(req.pending_logprobs), finish, cached)
            req.pending_ids.clear()
            req.pending_logprobs.clear()
            outbox.setdefault(req.waker, []).append((req.queue, delta))

    def _fail(self, seq: _Seq, error: BaseException) -> None:
        self._scheduler.finish(seq)
        self._post(seq, error)

    def _post(self, seq: _Seq, item: Delta | BaseException) -> None:
        req = seq.payload
        if not req.waker.post([(req.queue, item)]):  # the caller's event loop has closed
            self._scheduler.cancel(seq)

    def _deliver_all(self, outbox: _Outbox) -> None:
        for waker, items in outbox.items():
            if not waker.post(items):
                log.debug("an event loop closed with %d deltas undelivered", len(items))

    def _release(self, seq: _Seq) -> None:
        """Free the sequence's sampler; clear its KV cache unless it stays for prefix caching."""
        lib = self._lib
        if seq.slot >= 0 and self._memory is not None and not self.settings.prefix_cache:
            lib.llama_memory_seq_rm(self._memory, seq.slot, -1, -1)
        if seq.payload.sampler is not None:
            lib.llama_sampler_free(seq.payload.sampler)
            seq.payload.sampler = None

    def _prepare(self, seq: _Seq) -> None:
        """Build a grammar request's sampler; keep the first ``n_past`` cached tokens of the new slot."""
        lib, memory = self._lib, self._memory
        req = seq.payload
        if req.sampler is None:
            try:
                req.sampler = build_sampler(lib, self._vocab, self._n_vocab, req.params)
            except ValueError as exc:
                self._fail(seq, exc)
                return
        if seq.n_past and lib.llama_memory_seq_rm(memory, seq.slot, seq.n_past, -1):
            return
        # nothing to keep, or a memory that cannot drop a tail (recurrent state): start afresh
        lib.llama_memory_seq_rm(memory, seq.slot, -1, -1)
        seq.n_past = seq.cached = 0

    def _move(self, seq: _Seq, slot: int) -> None:
        """Copy the sequence's KV cache to another slot (done by llama.cpp before the next decode)."""
        lib, memory = self._lib, self._memory
        lib.llama_memory_seq_rm(memory, slot, -1, -1)
        lib.llama_memory_seq_cp(memory, seq.slot, slot, -1, -1)
        lib.llama_memory_seq_rm(memory, seq.slot, -1, -1)
        self.moves += 1

    # -- tokens, samplers, logprobs --------------------------------------------------------

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        if not special:
            cached = self._pieces.get(token)
            if cached is not None:
                return cached
        buf = self._piece_buf
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        piece = buf.raw[:n]
        if not special:
            self._pieces[token] = piece
        return piece

    def _logprob(self, index: int, token: int, top_n: int) -> TokenLogprob:
        ptr = self._lib.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        norm = peak + math.log(float(np.exp(logits - peak).sum()))
        top: tuple[tuple[str, float], ...] = ()
        if top_n > 0:
            n = min(top_n, self._n_vocab)
            best = np.argpartition(-logits, n - 1)[:n]
            best = best[np.argsort(-logits[best])]
            top = tuple((self._text(int(t)), float(logits[t]) - norm) for t in best)
        return TokenLogprob(self._text(token), float(logits[token]) - norm, top)

    def _text(self, token: int) -> str:
        return self._piece(token).decode("utf-8", errors="replace")

    def _kv_usage(self) -> float:
        total = self._n_ctx_seq * self.settings.max_running
        return min(1.0, self._scheduler.kv_tokens() / total) if total else 0.0
