"""The real server: the llama.cpp engine with the embedded SmolLM2 model, uvicorn on 127.0.0.1, and the
official ``openai`` client. The model is loaded once per session; assertions are about structure,
usage counts and finish reasons, never exact text (it varies with threads and batch sizes).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from pykaito.catalog.embedded import EMBEDDED_PRESET, embedded_gguf_path
from pykaito.runtime.engines.llamacpp import LlamaCppEngine, LlamaCppSettings
from pykaito.runtime.serve import ServerHandle, start_in_thread
from pykaito.runtime.settings import ServerSettings

pytestmark = pytest.mark.slow

KEY = "test-key-0123"
MODEL = EMBEDDED_PRESET
PER_REQUEST = 512
BODY_LIMIT = 64 * 1024
USER = [{"role": "user", "content": "Name three colours."}]


def engine(*, parallel: int, queue: int) -> LlamaCppEngine:
    return LlamaCppEngine(
        LlamaCppSettings(
            model_path=embedded_gguf_path(),
            n_ctx=parallel * PER_REQUEST,
            max_running=parallel,
            max_waiting=queue,
            prompt_chunk=128,
            threads=1,  # robust on a busy 2-core machine: llama.cpp's thread barriers spin
            served_model_name=MODEL,
        )
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    handle = start_in_thread(
        engine(parallel=8, queue=16), ServerSettings(port=0, api_key=KEY, max_body_bytes=BODY_LIMIT)
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def metric(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """One sample's value from a Prometheus text page (``default`` when it has none yet)."""
    wanted = {"model_name": MODEL, **labels}
    for line in text.splitlines():
        match = re.fullmatch(r"([^{\s]+)\{([^}]*)\} (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if found == wanted:
            return float(match.group(3))
    if default is not None:
        return default
    raise AssertionError(f"no sample {name}{wanted}")


def wait_for_metric(http: httpx.Client, name: str, value: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        current = metric(http.get("/metrics").text, name)
        if current == value:
            return
        assert time.monotonic() < deadline, f"{name} stayed at {current}, expected {value}"
        time.sleep(0.02)


def prompt_count(http: httpx.Client, **body: Any) -> int:
    response = http.post("/tokenize", json=body)
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


def test_models(client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert model.id == MODEL
    assert model.owned_by == "pykaito"
    assert (model.model_extra or {})["max_model_len"] == PER_REQUEST


def test_chat_with_exact_usage(client: openai.OpenAI, http: httpx.Client) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_count(http, messages=USER)
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 8
    else:
        assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_repeated_conversation_reports_its_cached_prompt_tokens(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    messages = [{"role": "user", "content": "Say something about the sea, please."}]
    before = http.get("/metrics").text
    hits = metric(before, "vllm:prefix_cache_hits_total", 0.0)
    queries = metric(before, "vllm:prefix_cache_queries_total", 0.0)
    replies = [
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
        for _ in range(2)
    ]
    usage = replies[1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    # everything but the last prompt token (its logits give the first new token) was cached
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
    assert replies[1].choices[0].message.content == replies[0].choices[0].message.content
    after = http.get("/metrics").text
    assert metric(after, "vllm:prefix_cache_queries_total") == queries + 2 * usage.prompt_tokens
    first = replies[0].usage
    assert first is not None
    first_cached = first.prompt_tokens_details.cached_tokens if first.prompt_tokens_details else 0
    assert metric(after, "vllm:prefix_cache_hits_total") == hits + first_cached + usage.prompt_tokens - 1


def test_chat_stream_with_usage(client: openai.OpenAI, http: httpx.Client) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long story about a cat."}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert content[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content).strip()
    assert [c.choices[0].finish_reason for c in content[:-1]] == [None] * (len(content) - 1)
    assert content[-1].choices[0].finish_reason == "length"
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 12
    messages = [{"role": "user", "content": "Write a long story about a cat."}]
    assert last.usage.prompt_tokens == prompt_count(http, messages=messages)


def test_completions(client: openai.OpenAI, http: httpx.Client) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_count(http, prompt=prompt)
    streamed = list(
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, stream=True, temperature=0)
    )
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].text for c in streamed)


def test_stop_strings(client: openai.OpenAI) -> None:
    stops = [" ", "e", "a"]  # one of them comes up within a few tokens of any English reply
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=32, stop=stops)
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop"
    assert not any(s in text for s in stops), text
    numbers = client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16, stop=[","], temperature=0
    )
    assert numbers.choices[0].finish_reason == "stop"
    assert "," not in numbers.choices[0].text


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'Give me a JSON object like {"name": "Bob"}.'}],
        response_format={"type": "json_object"},
        max_tokens=32,
        temperature=0,
    )
    text = reply.choices[0].message.content or ""
    assert text.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_json_schema_output_matches(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"type": "string", "enum": ["red", "green", "blue"]},
            # the grammar bounds an integer's digits only through an enum (no minimum/maximum),
            # so the whole object fits in max_tokens whatever the model picks
            "count": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        },
        "required": ["colour", "count"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Pick a colour and a number."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
        max_tokens=48,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    data = json.loads(reply.choices[0].message.content or "")
    assert data["colour"] in ("red", "green", "blue")
    assert data["count"] in (1, 2, 3, 4, 5)


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=4, logprobs=True, top_logprobs=3, temperature=0
    )
    assert reply.choices[0].logprobs is not None
    content = reply.choices[0].logprobs.content or []
    assert reply.usage is not None
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob


def test_tokenize_round_trip(http: httpx.Client) -> None:
    tokens = http.post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    assert tokens["max_model_len"] == PER_REQUEST
    assert http.post("/detokenize", json={"tokens": tokens["tokens"]}).json() == {"prompt": "Hello world"}


def test_eight_concurrent_streams_all_finish(client: openai.OpenAI) -> None:
    def run(i: int) -> tuple[str, str | None, int]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell me fact number {i} about the sea."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, completion = "", None, -1
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                completion = chunk.usage.completion_tokens
        return text, finish, completion

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert len(results) == 8
    for text, finish, completion in results:
        assert finish in ("stop", "length")
        assert 1 <= completion <= 16
        if finish == "length":
            assert completion == 16
        assert text or finish == "stop"


def test_cancelled_stream_frees_its_slot(client: openai.OpenAI, http: httpx.Client) -> None:
    aborted = metric(http.get("/metrics").text, "vllm:request_success_total", 0.0, finished_reason="abort")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a very long story about the sea."}],
        max_tokens=400,
        stream=True,
    )
    for received, _ in enumerate(stream, 1):
        if received == 3:
            break
    assert metric(http.get("/metrics").text, "vllm:num_requests_running") == 1
    stream.close()
    wait_for_metric(http, "vllm:num_requests_running", 0)
    page = http.get("/metrics").text
    assert metric(page, "vllm:request_success_total", finished_reason="abort") == aborted + 1
    assert metric(page, "vllm:num_requests_waiting") == 0


def test_auth(server: ServerHandle) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    bare = httpx.post(server.base_url + "/chat/completions", json={"model": MODEL, "messages": USER})
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"messages": USER, "n": 2}, "n", id="n"),
        pytest.param({"messages": USER, "max_tokens": -3}, "max_tokens", id="negative-max-tokens"),
        pytest.param({"messages": USER, "max_tokens": 10**12}, "max_tokens", id="huge-max-tokens"),
        pytest.param(
            {"messages": [{"role": "user", "content": "word " * 600}]}, "messages", id="prompt-over-context"
        ),
        pytest.param({"messages": USER, "seed": 2**63, "max_tokens": 1}, None, id="big-seed-is-fine"),
    ],
)
def test_bad_input_is_400(http: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    response = http.post("/v1/chat/completions", json=body)
    if param is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "x" * BODY_LIMIT}]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_server_answers_after_a_burst_of_malformed_requests(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    bad = [
        b"{",
        b"[]",
        b"\xff",
        b'{"messages": "x"}',
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}',
        b'{"messages": [{"role": "user", "content": {"nested": [1, 2]}}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "stop": [null]}',
        b'{"messages": [{"role": "user", "content": "x"}], "top_k": 99999999999999999999}',
        b'{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 100}, "n": 0}',
        b"[" * 50_000,
    ]
    sent = [(path, raw) for path in ("/v1/chat/completions", "/v1/completions") for raw in bad]
    sent += [("/tokenize", raw) for raw in (*bad[:4], bad[-1])] + [("/detokenize", b'{"tokens": [-1]}')]
    for _ in range(5):
        for path, raw in sent:
            response = http.post(path, content=raw, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, raw[:60], response.text)
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8)
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerHandle]:
    handle = start_in_thread(engine(parallel=1, queue=1), ServerSettings(port=0))
    yield handle
    handle.stop()


def test_overload_is_429_with_retry_after(small_server: ServerHandle) -> None:
    # The grammar admits no end before 2000 characters, so this request runs until max_tokens.
    long_text = {"type": "string", "pattern": "^[a-z ]{2000}$"}
    long_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 400,
        "stream": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": long_text}},
    }
    short_body = {"model": MODEL, "messages": USER, "max_tokens": 2, "stream": True}
    results: list[int] = []
    with httpx.Client(base_url=small_server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=long_body) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # keep a reference: a collected iterator closes the response
            assert next(lines).startswith("data: ")
            waiting = threading.Thread(
                target=lambda: results.append(
                    http.post("/v1/chat/completions", json={**short_body, "stream": False}).status_code
                )
            )
            waiting.start()
            wait_for_metric(http, "vllm:num_requests_waiting", 1)
            refused = http.post("/v1/chat/completions", json=short_body)
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError):
                openai.OpenAI(
                    base_url=small_server.base_url, api_key="x", max_retries=0
                ).chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        waiting.join(30)
        assert results == [200]  # the queued request ran once the slot was free
        wait_for_metric(http, "vllm:num_requests_running", 0)
        assert http.post("/v1/chat/completions", json=short_body).status_code == 200


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_are_refused_because_smollm2s_template_cannot_render_them(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER_TOOL], max_tokens=4)
    assert caught.value.code == "tools_not_supported"
    assert "chat template does not render tools" in caught.value.message
    # tool_choice "none": a plain reply
    reply = client.chat.completions.create(
        model=MODEL, messages=USER, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=4
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_text_plain_body_is_415_and_not_served(http: httpx.Client) -> None:
    body = json.dumps({"messages": USER, "max_tokens": 2})
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_version_reports_the_sampling_defaults(http: httpx.Client) -> None:
    version = http.get("/version").json()
    assert version["sampling_defaults"] == {
        "temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "source": "llama.cpp defaults"
    }  # fmt: skip


def test_the_openapi_document_is_served(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
