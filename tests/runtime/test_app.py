"""The HTTP server over a fake engine: wire format, streaming, errors, auth, limits and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.runtime.conftest import ClientFactory, assert_error, sse_events
from tests.runtime.fake_engine import FakeEngine

REPLY_WORDS = FakeEngine().reply.split(" ")
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}


def chat(**extra: Any) -> dict[str, Any]:
    return {**CHAT, **extra}


async def test_models_lists_the_served_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == "fake-model"
    assert card["object"] == "model"
    assert card["owned_by"] == "pykaito"
    assert card["max_model_len"] == 512
    assert isinstance(card["created"], int)


async def test_served_model_name_replaces_the_engine_name(
    make_client: ClientFactory, fake: FakeEngine
) -> None:
    client = make_client(fake, served_model_name="my-model")
    assert (await client.get("/v1/models")).json()["data"][0]["id"] == "my-model"
    ok = await client.post("/v1/chat/completions", json=chat(model="my-model"))
    assert ok.status_code == 200
    assert ok.json()["model"] == "my-model"
    assert_error(await client.post("/v1/chat/completions", json=chat()), 404, param="model")


async def test_health_and_version(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    assert (await client.get("/health")).status_code == 200
    version = (await client.get("/version")).json()
    assert isinstance(version["version"], str)
    fake.ready = False
    response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["reason"] == "loading the model"
    error = assert_error(await client.post("/v1/chat/completions", json=chat()), 503)
    assert "loading" in error["message"]


async def test_chat_completion(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": fake.reply}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    prompt_tokens = len(b"<user>Hi\n<assistant>")
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(REPLY_WORDS),
        "total_tokens": prompt_tokens + len(REPLY_WORDS),
    }
    (request,) = fake.requests
    assert request.params.max_tokens == 512 - prompt_tokens  # the rest of the context by default


async def test_sampling_parameters_reach_the_engine(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    body = chat(
        max_completion_tokens=7,
        max_tokens=99,
        temperature=0.3,
        top_p=0.9,
        top_k=-1,
        min_p=0.05,
        seed=2**63,
        stop="never",
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        user="someone",
    )
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    params = fake.requests[0].params
    assert params.max_tokens == 7  # max_completion_tokens wins over max_tokens
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.3, 0.9, 0, 0.05)
    assert params.seed == 2**63
    assert params.stop == ("never",)
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, -0.5, 1.1)
    assert params.logprobs is None and params.grammar is None


@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        pytest.param("/v1/chat/completions", {"ignore_eos": True}, True, id="chat"),
        pytest.param("/v1/completions", {"ignore_eos": True}, True, id="completions"),
        pytest.param("/v1/chat/completions", {}, False, id="default-off"),
        pytest.param("/v1/chat/completions", {"ignore_eos": False}, False, id="false"),
        pytest.param(
            "/v1/chat/completions",
            {"ignore_eos": True, "response_format": {"type": "json_object"}},
            False,
            id="not-with-a-grammar",
        ),
    ],
)
async def test_ignore_eos_reaches_the_engine(
    client: httpx.AsyncClient, fake: FakeEngine, path: str, extra: dict[str, Any], expected: bool
) -> None:
    body = chat(**extra) if path.endswith("chat/completions") else {"prompt": "Once upon a time", **extra}
    assert (await client.post(path, json=body)).status_code == 200
    assert fake.requests[-1].params.ignore_eos is expected


async def test_ignore_eos_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(ignore_eos="yes"))
    assert_error(response, 400, param="ignore_eos")


async def test_max_tokens_and_stop(client: httpx.AsyncClient) -> None:
    short = (await client.post("/v1/chat/completions", json=chat(max_tokens=3))).json()
    assert short["choices"][0]["message"]["content"] == "Hello there, I"
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    stopped = (await client.post("/v1/chat/completions", json=chat(stop=["fake", "zzz"]))).json()
    assert stopped["choices"][0]["message"]["content"] == "Hello there, I am a "
    assert stopped["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_in_openai_chunk_format(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "fake-model" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == fake.reply
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_chat_stream_with_usage(client: httpx.AsyncClient) -> None:
    body = chat(stream=True, max_tokens=4, stream_options={"include_usage": True})
    events = sse_events((await client.post("/v1/chat/completions", json=body)).text)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 4


async def test_chat_logprobs(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    body = chat(max_tokens=2, logprobs=True, top_logprobs=2)
    choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
    assert fake.requests[0].params.logprobs == 2
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == ["Hello", " there,"]
    assert content[0]["logprob"] == -0.5
    assert content[0]["bytes"] == list(b"Hello")
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["alt0", "alt1"]


async def test_completions(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    body = {"model": "fake-model", "prompt": "Once", "max_tokens": 2}
    response = (await client.post("/v1/completions", json=body)).json()
    assert response["object"] == "text_completion"
    assert response["id"].startswith("cmpl-")
    assert response["choices"][0]["text"] == "Hello there,"
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
    }  # BOS + 4 bytes
    assert list(fake.requests[0].prompt_tokens) == [256, *b"Once"]

    echoed = (await client.post("/v1/completions", json={**body, "echo": True})).json()
    assert echoed["choices"][0]["text"] == "OnceHello there,"

    default = (await client.post("/v1/completions", json={"prompt": [79, 110]})).json()
    assert fake.requests[-1].prompt_tokens == [79, 110]
    assert fake.requests[-1].params.max_tokens == 16  # OpenAI's default for completions
    assert default["choices"][0]["text"] == fake.reply


async def test_completions_stream(client: httpx.AsyncClient) -> None:
    body = {"prompt": ["Once"], "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events((await client.post("/v1/completions", json=body)).text)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello there, I"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    body = chat(foo="bar", metadata={"x": 1}, tools=[], messages=[{"role": "user", "content": "Hi", "x": 1}])
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


async def test_content_parts_and_names(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    parts = [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]
    body = chat(
        messages=[{"role": "system", "content": "Be brief", "name": "x"}, {"role": "user", "content": parts}]
    )
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert bytes(fake.requests[0].prompt_tokens).decode() == "<system>Be brief\n<user>Hi there\n<assistant>"


async def test_tokenize_and_detokenize(client: httpx.AsyncClient) -> None:
    tokens = (await client.post("/tokenize", json={"prompt": "Hi"})).json()
    assert tokens == {"count": 3, "max_model_len": 512, "tokens": [256, 72, 105], "token_strs": None}
    chat_tokens = (await client.post("/tokenize", json={"messages": CHAT["messages"]})).json()
    assert chat_tokens["tokens"] == list(b"<user>Hi\n<assistant>")
    plain = (await client.post("/tokenize", json={"prompt": "Hi", "add_special_tokens": False})).json()
    assert plain["tokens"] == [72, 105]
    text = (await client.post("/detokenize", json={"tokens": [72, 105]})).json()
    assert text == {"prompt": "Hi"}


@pytest.mark.parametrize(
    ("body", "param", "text"),
    [
        pytest.param(chat(n=2), "n", "not supported yet", id="n-above-1"),
        pytest.param(chat(max_tokens=-1), "max_tokens", "", id="negative-max-tokens"),
        pytest.param(chat(max_tokens=0), "max_tokens", "", id="zero-max-tokens"),
        pytest.param(chat(max_tokens="many"), "max_tokens", "", id="string-max-tokens"),
        pytest.param(chat(max_tokens=10**30), "max_tokens", "at most", id="huge-max-tokens"),
        pytest.param(
            chat(max_tokens=600), "max_tokens", "maximum context length", id="max-tokens-over-context"
        ),
        pytest.param(chat(temperature=-1), "temperature", "", id="negative-temperature"),
        pytest.param(chat(top_p=0), "top_p", "", id="zero-top-p"),
        pytest.param(chat(top_k=10**12), "top_k", "", id="huge-top-k"),
        pytest.param(chat(seed=2**70), "seed", "", id="huge-seed"),
        pytest.param(chat(presence_penalty=5), "presence_penalty", "", id="presence-penalty"),
        pytest.param(chat(stop=[""]), "stop", "empty", id="empty-stop"),
        pytest.param(chat(stop=5), "stop", "", id="number-stop"),
        pytest.param(chat(messages=[]), "messages", "", id="no-messages"),
        pytest.param({"model": "fake-model"}, "messages", "", id="missing-messages"),
        pytest.param(chat(messages="hi"), "messages", "", id="messages-string"),
        pytest.param(
            chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "", id="bad-role"
        ),
        pytest.param(
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content",
            "image_url",
            id="image-part",
        ),
        pytest.param(
            chat(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "refuse"}]),
            "messages",
            "refused",
            id="template-refusal",
        ),
        pytest.param(
            chat(messages=[{"role": "user", "content": "x" * 600}]), "messages", "context", id="long-prompt"
        ),
        pytest.param(
            chat(stream_options={"include_usage": True}), None, "stream", id="stream-options-no-stream"
        ),
        pytest.param(chat(top_logprobs=3), None, "logprobs", id="top-logprobs-without-logprobs"),
        pytest.param(chat(logprobs=True, top_logprobs=21), "top_logprobs", "", id="too-many-top-logprobs"),
        pytest.param(chat(response_format={"type": "yaml"}), "response_format", "", id="bad-response-format"),
        pytest.param(chat(stream="yes please"), "stream", "", id="bad-stream"),
    ],
)
async def test_bad_chat_requests_are_400(
    client: httpx.AsyncClient, body: Any, param: str | None, text: str
) -> None:
    error = assert_error(await client.post("/v1/chat/completions", json=body), 400, param=param, text=text)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        pytest.param("/v1/completions", {"prompt": ["a", "b"]}, "prompt", id="several-prompts"),
        pytest.param("/v1/completions", {"prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param("/v1/completions", {"prompt": [1, 999]}, "prompt[1]", id="prompt-token-outside-vocab"),
        pytest.param("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix", id="suffix"),
        pytest.param("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of", id="best-of"),
        pytest.param("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs", id="logprobs-over-20"),
        pytest.param("/v1/completions", {}, "prompt", id="missing-prompt"),
        pytest.param("/tokenize", {}, None, id="tokenize-nothing"),
        pytest.param("/tokenize", {"prompt": "a", "messages": []}, None, id="tokenize-both"),
        pytest.param("/detokenize", {"tokens": [1, -1]}, "tokens[1]", id="negative-token"),
        pytest.param("/detokenize", {"tokens": [300]}, "tokens[0]", id="token-outside-vocab"),
        pytest.param("/detokenize", {"tokens": "abc"}, "tokens", id="tokens-string"),
    ],
)
async def test_bad_requests_to_other_endpoints_are_400(
    client: httpx.AsyncClient, path: str, body: Any, param: str | None
) -> None:
    assert_error(await client.post(path, json=body), 400, param=param)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}', id="infinite-float"
        ),
        pytest.param(b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": NaN}', id="nan"),
        pytest.param(b'{"max_tokens": ' + b"9" * 5000 + b"}", id="5000-digit-number"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
async def test_malformed_bodies_are_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 400)


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    error = assert_error(
        await client.post("/v1/chat/completions", json=chat(model="gpt-9")), 404, param="model"
    )
    assert error["code"] == "model_not_found"
    assert "fake-model" in error["message"]


async def test_unknown_route_and_method_are_openai_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404)
    assert_error(await client.get("/v1/chat/completions"), 405)


async def test_api_key(make_client: ClientFactory, fake: FakeEngine) -> None:
    client = make_client(fake, api_key="s3cret")
    missing = assert_error(await client.post("/v1/chat/completions", json=chat()), 401, text="missing")
    assert missing["type"] == "authentication_error"
    wrong = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer nope"})
    assert_error(wrong, 401, text="invalid")
    assert_error(await client.get("/v1/models", headers={"authorization": "Basic s3cret"}), 401)
    assert_error(await client.get("/version"), 401)
    ok = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert (await client.get("/v1/models", headers={"Authorization": "bearer s3cret"})).status_code == 200
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert not fake.requests[1:], "a refused request reached the engine"


async def test_body_limit(make_client: ClientFactory, fake: FakeEngine) -> None:
    client = make_client(fake, max_body_bytes=1000)
    big = chat(messages=[{"role": "user", "content": "x" * 2000}])
    error = assert_error(await client.post("/v1/chat/completions", json=big), 413)
    assert error["code"] == "request_too_large"

    async def chunked() -> Any:  # no Content-Length: the limit is enforced on the bytes that arrive
        for _ in range(20):
            yield b" " * 100

    streamed = await client.post(
        "/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413)
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert len(fake.requests) == 1


async def test_queue_full_is_429_with_retry_after(make_client: ClientFactory) -> None:
    fake = FakeEngine(max_running=1, max_waiting=0, token_delay=0.02)
    client = make_client(fake)
    first = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
    for _ in range(200):
        if fake.stats().running == 1:
            break
        await asyncio.sleep(0.005)
    response = await client.post("/v1/chat/completions", json=chat(stream=True))
    error = assert_error(response, 429)
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "2"
    assert (await first).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


async def test_engine_refusing_a_prompt_is_400(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    fake._max_model_len = 10_000  # the server lets the prompt through; the engine refuses it
    fake.generate = _refuse  # type: ignore[method-assign]
    error = assert_error(await client.post("/v1/chat/completions", json=chat()), 400, param="messages")
    assert "too long here" in error["message"]
    assert error["code"] == "context_length_exceeded"
    completion = await client.post("/v1/completions", json={"prompt": "Once"})
    assert_error(completion, 400, param="prompt", text="too long here")


def _refuse(request: Any) -> Any:
    from pykaito.errors import PromptTooLongError

    raise PromptTooLongError("the prompt is too long here", 10, 5)


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat(max_tokens=3))
    await client.post("/v1/chat/completions", json=chat())
    text = (await client.get("/metrics")).text
    label = 'model_name="fake-model"'
    assert f"vllm:num_requests_running{{{label}}} 0.0" in text
    assert f"vllm:num_requests_waiting{{{label}}} 0.0" in text
    assert f'vllm:request_success_total{{finished_reason="length",{label}}} 1.0' in text
    assert f'vllm:request_success_total{{finished_reason="stop",{label}}} 1.0' in text
    assert f"vllm:generation_tokens_total{{{label}}} {3.0 + len(REPLY_WORDS)}" in text
    prompt = len("<user>Hi\n<assistant>")
    assert f"vllm:prompt_tokens_total{{{label}}} {2.0 * prompt}" in text
    assert f"vllm:time_to_first_token_seconds_count{{{label}}} 2.0" in text
    assert f"vllm:e2e_request_latency_seconds_count{{{label}}} 2.0" in text
    assert f"vllm:time_per_output_token_seconds_count{{{label}}} {2.0 + len(REPLY_WORDS) - 1}" in text


async def test_each_app_has_its_own_metrics(make_client: ClientFactory) -> None:
    one, two = make_client(FakeEngine()), make_client(FakeEngine())
    await one.post("/v1/chat/completions", json=chat())
    assert "vllm:request_success_total{" in (await one.get("/metrics")).text
    assert "vllm:request_success_total{" not in (await two.get("/metrics")).text


async def test_server_survives_a_burst_of_malformed_requests(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    bad: list[tuple[str, bytes]] = [
        ("/v1/chat/completions", b"{"),
        ("/v1/chat/completions", b'{"messages": 5}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 3}'),
        ("/v1/completions", b'{"prompt": {"a": 1}}'),
        ("/v1/completions", b'{"prompt": "x", "temperature": "hot"}'),
        ("/tokenize", b"null"),
        ("/detokenize", b'{"tokens": [1e400]}'),
    ]
    for round_ in range(10):
        for path, raw in bad:
            response = await client.post(path, content=raw, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (round_, path, raw, response.text)
    ok = await client.post("/v1/chat/completions", json=chat())
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == fake.reply
    assert fake.stats().running == 0


class SizedFake(FakeEngine):
    """An engine that tells its vocabulary size: ids are checked before they reach it."""

    vocab_size = 257

    def detokenize(self, tokens: Any) -> str:
        assert all(t < self.vocab_size for t in tokens), "an id outside the vocabulary reached the engine"
        return super().detokenize(tokens)


async def test_token_ids_outside_a_known_vocabulary(make_client: ClientFactory) -> None:
    client = make_client(SizedFake())
    error = assert_error(await client.post("/detokenize", json={"tokens": [1, 257]}), 400, param="tokens[1]")
    assert "outside the vocabulary (0..256)" in error["message"]
    assert_error(await client.post("/v1/completions", json={"prompt": [300]}), 400, param="prompt[0]")
    assert (await client.post("/detokenize", json={"tokens": [72, 256]})).json() == {"prompt": "H"}


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        pytest.param({"type": "wat"}, "Unrecognized schema", id="unknown-type"),
        pytest.param({"properties": {"a": {"$ref": "#/nowhere"}}}, "nowhere", id="dangling-ref"),
        pytest.param(
            {"$ref": "https://example.com/schema.json"}, "not allowed", id="remote-ref-never-fetched"
        ),
        pytest.param({"type": "string", "pattern": "(("}, "Pattern", id="bad-pattern"),
        pytest.param({"type": "string", "minLength": 10**8}, "at most 8192", id="huge-min-length"),
        pytest.param(
            {"type": "array", "items": {"maxItems": 10**9}}, "schema.items.maxItems", id="nested-bound"
        ),
        pytest.param({"type": "string", "pattern": "^a{5,100000}$"}, "repeats 100000", id="huge-repetition"),
    ],
)
async def test_json_schemas_that_cannot_be_served_are_400(
    client: httpx.AsyncClient, fake: FakeEngine, schema: dict[str, Any], text: str
) -> None:
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert_error(
        await client.post("/v1/chat/completions", json=body),
        400,
        param="response_format.json_schema.schema",
        text=text,
    )
    assert not fake.requests


async def test_structured_output_reaches_the_engine_as_a_grammar(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"fake": {"type": "boolean"}}, "required": ["fake"]}
    for response_format in (
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
    ):
        reply = (await client.post("/v1/chat/completions", json=chat(response_format=response_format))).json()
        assert reply["choices"][0]["message"]["content"] == '{"fake": true}'
    object_grammar, schema_grammar = (r.params.grammar for r in fake.requests)
    assert object_grammar is not None and "root" in object_grammar and '"{"' in object_grammar
    assert schema_grammar is not None and "fake" in schema_grammar
    plain = (await client.post("/v1/chat/completions", json=chat(response_format={"type": "text"}))).json()
    assert plain["choices"][0]["message"]["content"] == fake.reply
    assert fake.requests[-1].params.grammar is None
