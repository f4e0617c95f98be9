"""Strict requests: JSON only, strict types, OpenAI's ranges, tools, and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from pydantic.json_schema import models_json_schema

from pykaito.errors import InputError
from pykaito.runtime.app import create_app
from pykaito.runtime.engine import SamplingDefaults
from pykaito.runtime.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    VersionInfo,
)
from pykaito.runtime.settings import ServerSettings, resolve_api_key
from tests.runtime.conftest import ClientFactory, assert_error
from tests.runtime.fake_engine import TOOL_CALL, FakeEngine

USER = [{"role": "user", "content": "Hi"}]
CHAT = {"messages": USER, "max_tokens": 3}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(**extra: Any) -> dict[str, Any]:
    return {**CHAT, **extra}


# ---------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text-plain"),
        pytest.param("text/plain;charset=UTF-8", id="text-plain-charset"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/jsonp", id="jsonp"),
        pytest.param(None, id="none"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"])
async def test_a_body_not_sent_as_json_is_415(
    client: httpx.AsyncClient, fake: FakeEngine, path: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    body = b'{"messages": [{"role": "user", "content": "Hi"}], "prompt": "x", "tokens": [1]}'
    response = await client.post(path, content=body, headers=headers)
    error = assert_error(response, 415, text="application/json")
    assert error["code"] == "unsupported_media_type"
    assert not fake.requests


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_content_types_are_served(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        "/v1/chat/completions", content=httpx.Request("POST", "/", json=CHAT).content,
        headers={"content-type": content_type},
    )  # fmt: skip
    assert response.status_code == 200, response.text


async def test_the_key_is_checked_before_the_content_type(
    make_client: ClientFactory, fake: FakeEngine
) -> None:
    client = make_client(fake, api_key="k")
    assert_error(
        await client.post("/v1/completions", content=b"x", headers={"content-type": "text/plain"}), 401
    )


# ---------------------------------------------------------------- strict types and ranges


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        pytest.param("/v1/chat/completions", chat(stream="yes"), "stream", id="stream-string"),
        pytest.param("/v1/chat/completions", chat(stream=1), "stream", id="stream-number"),
        pytest.param("/v1/chat/completions", chat(max_tokens="10"), "max_tokens", id="max-tokens-string"),
        pytest.param("/v1/chat/completions", chat(max_tokens=10.0), "max_tokens", id="max-tokens-float"),
        pytest.param("/v1/chat/completions", chat(max_tokens=True), "max_tokens", id="max-tokens-bool"),
        pytest.param("/v1/chat/completions", chat(temperature="0.5"), "temperature", id="temperature-string"),
        pytest.param("/v1/chat/completions", chat(temperature=True), "temperature", id="temperature-bool"),
        pytest.param("/v1/chat/completions", chat(temperature=5), "temperature", id="temperature-over-2"),
        pytest.param("/v1/chat/completions", chat(temperature=2.01), "temperature", id="temperature-2.01"),
        pytest.param("/v1/chat/completions", chat(top_p=1.5), "top_p", id="top-p-over-1"),
        pytest.param("/v1/chat/completions", chat(min_p=-0.1), "min_p", id="min-p-negative"),
        pytest.param("/v1/chat/completions", chat(frequency_penalty=2.5), "frequency_penalty", id="freq-pen"),
        pytest.param("/v1/chat/completions", chat(presence_penalty=-3), "presence_penalty", id="pres-pen"),
        pytest.param("/v1/chat/completions", chat(n=0), "n", id="n-zero"),
        pytest.param("/v1/chat/completions", chat(n="1"), "n", id="n-string"),
        pytest.param("/v1/chat/completions", chat(logprobs=True, top_logprobs=-1), "top_logprobs",
                     id="top-logprobs-neg"),
        pytest.param("/v1/chat/completions", chat(logprobs="true"), "logprobs", id="logprobs-string"),
        pytest.param("/v1/chat/completions", chat(seed="7"), "seed", id="seed-string"),
        pytest.param(
            "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), "messages[0].content",
            id="content-number",
        ),
        pytest.param(
            "/v1/chat/completions", chat(stream=True, stream_options={"include_usage": "yes"}),
            "stream_options.include_usage", id="include-usage-string",
        ),
        pytest.param("/v1/completions", {"prompt": [[False]]}, "prompt", id="prompt-bool-token"),
        pytest.param("/v1/completions", {"prompt": [True, 2]}, "prompt", id="prompt-bool-tokens"),
        pytest.param("/v1/completions", {"prompt": "x", "echo": "no"}, "echo", id="echo-string"),
        pytest.param("/v1/completions", {"prompt": "x", "logprobs": "2"}, "logprobs", id="logprobs-str"),
        pytest.param("/detokenize", {"tokens": [True]}, "tokens[0]", id="detokenize-bool"),
        pytest.param("/detokenize", {"tokens": ["1"]}, "tokens[0]", id="detokenize-string"),
        pytest.param("/tokenize", {"prompt": 5}, "prompt", id="tokenize-number"),
        pytest.param("/tokenize", {"prompt": "x", "add_special_tokens": "no"}, "add_special_tokens",
                     id="tok-add"),
    ],
)  # fmt: skip
async def test_types_are_strict_and_ranges_enforced(
    client: httpx.AsyncClient, fake: FakeEngine, path: str, body: dict[str, Any], param: str
) -> None:
    error = assert_error(await client.post(path, json=body), 400)
    assert error["param"] is not None and error["param"].startswith(param), error
    assert error["message"].startswith(error["param"]), error
    assert not fake.requests


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"temperature": 2}, id="temperature-2-as-integer"),
        pytest.param({"temperature": 0}, id="temperature-0"),
        pytest.param({"top_p": 1}, id="top-p-1-as-integer"),
        pytest.param({"presence_penalty": -2, "frequency_penalty": 2}, id="penalty-bounds"),
        pytest.param({"logprobs": True, "top_logprobs": 20}, id="top-logprobs-20"),
        pytest.param({"n": 1, "stream": False, "seed": -1}, id="plain-values"),
    ],
)
async def test_values_at_the_edges_of_the_ranges_are_served(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    response = await client.post("/v1/chat/completions", json=chat(**extra))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param(b"", "missing", id="empty"),
        pytest.param(b"[1, 2]", "JSON object", id="array"),
        pytest.param(b"{oops", "not valid JSON", id="invalid"),
    ],
)
async def test_body_shape_errors_say_what_is_wrong(client: httpx.AsyncClient, raw: bytes, text: str) -> None:
    response = await client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, text=text)


# ---------------------------------------------------------------- tools


async def test_tools_on_a_model_whose_template_has_no_tool_support_are_400(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    error = assert_error(
        await client.post("/v1/chat/completions", json=chat(tools=[WEATHER])), 400, param="tools"
    )
    assert error["code"] == "tools_not_supported"
    assert "chat template does not render tools" in error["message"]
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert_error(
        await client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice=named)),
        400,
        param="tools",
    )
    assert not fake.requests
    # tool_choice "none" asks for a plain reply: the tools are not shown to the model
    ok = await client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="none"))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        pytest.param({"tool_choice": "auto"}, None, id="tool-choice-without-tools"),
        pytest.param(
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            None, id="tool-choice-names-an-unknown-function",
        ),
        pytest.param({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice",
                     id="unknown-tool-choice"),
        pytest.param({"tools": [{"type": "function"}]}, "tools[0].function", id="tool-without-function"),
        pytest.param(
            {"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name",
            id="bad-function-name",
        ),
        pytest.param({"tools": [{"type": "retrieval"}]}, "tools[0].type", id="unknown-tool-type"),
        pytest.param({"functions": [WEATHER["function"]]}, "functions", id="legacy-functions"),
        pytest.param({"function_call": "auto"}, "function_call", id="legacy-function-call"),
    ],
)  # fmt: skip
async def test_malformed_tool_requests_are_400(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str | None
) -> None:
    error = assert_error(await client.post("/v1/chat/completions", json=chat(**extra)), 400)
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param), error


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def history(call: dict[str, Any], **assistant: Any) -> list[dict[str, Any]]:
    return [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call], **assistant},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        pytest.param(history({**CALL, "function": {"name": "f", "arguments": "{not json"}}),
                     "messages[1].tool_calls[0].function.arguments", id="arguments-not-json"),
        pytest.param(history({**CALL, "function": {"name": "f", "arguments": "[1]"}}),
                     "messages[1].tool_calls[0].function.arguments", id="arguments-not-an-object"),
        pytest.param(history({**CALL, "function": {"name": "f", "arguments": {"city": "Paris"}}}),
                     "messages[1].tool_calls[0].function.arguments", id="arguments-not-a-string"),
        pytest.param(history({**CALL, "function": {"arguments": "{}"}}),
                     "messages[1].tool_calls[0].function.name", id="no-name"),
        pytest.param(history({**CALL, "type": "code"}), "messages[1].tool_calls[0].type", id="bad-type"),
        pytest.param(history({k: v for k, v in CALL.items() if k != "id"}), "messages[1].tool_calls[0].id",
                     id="no-id"),
        pytest.param([*history(CALL)[:2], {"role": "tool", "content": "sunny"}], "messages[2]",
                     id="tool-message-without-call-id"),
        pytest.param([{"role": "user", "content": "x", "tool_calls": [CALL]}], "messages[0]",
                     id="tool-calls-on-a-user-message"),
        pytest.param([*history(CALL)[:1], {"role": "assistant", "tool_calls": "call it"}],
                     "messages[1].tool_calls", id="tool-calls-not-a-list"),
    ],
)  # fmt: skip
async def test_malformed_tool_calls_in_the_history_are_400(
    client: httpx.AsyncClient, fake: FakeEngine, messages: list[dict[str, Any]], param: str
) -> None:
    error = assert_error(await client.post("/v1/chat/completions", json=chat(messages=messages)), 400)
    assert error["param"] is not None and error["param"].startswith(param), error
    assert not fake.requests


async def test_a_well_formed_tool_history_reaches_the_template(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    response = await client.post("/v1/chat/completions", json=chat(messages=history(CALL)))
    assert response.status_code == 200, response.text
    prompt = bytes(t for t in fake.requests[0].prompt_tokens if t < 256).decode()
    assert "<tool>sunny" in prompt


# ---------------------------------------------------------------- chat template failures


async def test_a_template_that_refuses_is_the_clients_400_and_a_broken_one_the_servers_500(
    client: httpx.AsyncClient,
) -> None:
    refused = [*USER, {"role": "assistant", "content": "refuse"}]
    assert_error(
        await client.post("/v1/chat/completions", json=chat(messages=refused)), 400, param="messages"
    )
    bug = [{"role": "user", "content": "template bug"}]
    error = assert_error(await client.post("/v1/chat/completions", json=chat(messages=bug)), 500)
    assert error["type"] == "server_error"
    assert "chat template of fake-model failed" in error["message"]


# ---------------------------------------------------------------- sampling defaults, version, health


async def test_omitted_sampling_parameters_take_the_engines_defaults(
    make_client: ClientFactory,
) -> None:
    fake = FakeEngine(
        defaults=SamplingDefaults(temperature=0.6, top_p=0.9, top_k=20, min_p=0.1, source="test")
    )
    client = make_client(fake)
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    params = fake.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.6, 0.9, 20, 0.1)
    given = chat(temperature=1.0, top_k=-1)
    assert (await client.post("/v1/chat/completions", json=given)).status_code == 200
    params = fake.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (1.0, 0.9, 0, 0.1)
    assert (await client.post("/v1/completions", json={"prompt": "x"})).status_code == 200
    assert fake.requests[-1].params.temperature == 0.6
    version = (await client.get("/version")).json()
    assert version["sampling_defaults"] == {
        "temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.1, "source": "test"
    }  # fmt: skip


def test_llama_cpp_defaults_when_the_model_recommends_none() -> None:
    assert SamplingDefaults() == SamplingDefaults(0.8, 0.95, 40, 0.05, "llama.cpp defaults")


async def test_head_health(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    ok = await client.head("/health")
    assert ok.status_code == 200 and ok.content == b""
    fake.ready = False
    assert (await client.head("/health")).status_code == 503


async def test_tokenize_messages_with_and_without_the_generation_prompt(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"messages": USER}
    with_prompt = (await client.post("/tokenize", json=body)).json()["count"]
    without = (await client.post("/tokenize", json={**body, "add_generation_prompt": False})).json()["count"]
    assert with_prompt - without == len(b"<assistant>")


# ---------------------------------------------------------------- the OpenAPI document


ROUTES = [
    pytest.param("/v1/chat/completions", ChatCompletionRequest, ChatCompletion, id="chat"),
    pytest.param("/v1/completions", CompletionRequest, Completion, id="completions"),
    pytest.param("/tokenize", TokenizeRequest, TokenizeResponse, id="tokenize"),
    pytest.param("/detokenize", DetokenizeRequest, DetokenizeResponse, id="detokenize"),
]


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(FakeEngine(), ServerSettings(), manage_engine=False).openapi()


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    name = ref.removeprefix("#/components/schemas/")
    schema: dict[str, Any] = _as_fastapi_writes(document["components"]["schemas"][name])
    return schema


def _as_fastapi_writes(node: Any) -> Any:
    """FastAPI's document leaves out ``"default": null`` and writes numbers as floats: so does this."""
    if isinstance(node, dict):
        return {k: _as_fastapi_writes(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_as_fastapi_writes(v) for v in node]
    if isinstance(node, int) and not isinstance(node, bool):
        return float(node)
    return node


def _expected(model: type[pydantic.BaseModel], mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's JSON schema as FastAPI publishes it: its own schema and the schemas it refers to."""
    _, top = models_json_schema([(model, mode)], ref_template="#/components/schemas/{model}")  # type: ignore[list-item]
    defs: dict[str, Any] = _as_fastapi_writes(top.get("$defs", {}))
    return defs[model.__name__], defs


@pytest.mark.parametrize(("path", "request_model", "response_model"), ROUTES)
def test_openapi_declares_each_body_as_its_pydantic_model(
    openapi: dict[str, Any],
    path: str,
    request_model: type[pydantic.BaseModel],
    response_model: type[pydantic.BaseModel],
) -> None:
    operation = openapi["paths"][path]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["application/json"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    own, defs = _expected(request_model, "validation")
    assert _resolve(openapi, ref) == own
    for name, schema in defs.items():
        assert _as_fastapi_writes(openapi["components"]["schemas"][name]) == schema, name
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    own, defs = _expected(response_model, "serialization")
    assert _resolve(openapi, ok) == own
    for status in ("400", "401", "415", "503"):
        error = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert error == "#/components/schemas/ErrorResponse"


def test_openapi_declares_the_get_routes_and_the_streams(openapi: dict[str, Any]) -> None:
    for path, model in (("/v1/models", ModelList), ("/version", VersionInfo)):
        ref = openapi["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "$ref"
        ]
        assert _resolve(openapi, ref) == _expected(model, "serialization")[0]
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "text/event-stream" in openapi["paths"][path]["post"]["responses"]["200"]["content"]
    chunk = openapi["components"]["schemas"]["ChatCompletionChunk"]
    assert chunk["properties"]["object"]["const"] == "chat.completion.chunk"


async def test_every_route_in_the_app_is_in_the_document_or_deliberately_left_out(
    openapi: dict[str, Any],
) -> None:
    documented = set(openapi["paths"])
    assert documented == {"/v1/models", "/version", "/v1/chat/completions", "/v1/completions", "/tokenize",
                          "/detokenize"}  # fmt: skip


# ---------------------------------------------------------------- API keys


def test_api_key_sources(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key("flag", key_file, {"KAITO_API_KEY": "env"}) == "flag"
    assert resolve_api_key(None, key_file, {"KAITO_API_KEY": "env"}) == "from-file"
    assert resolve_api_key(None, None, {"KAITO_API_KEY_FILE": str(key_file)}) == "from-file"
    assert resolve_api_key(None, None, {"KAITO_API_KEY": "env"}) == "env"
    assert resolve_api_key(None, None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        resolve_api_key(None, tmp_path / "empty", {})
    with pytest.raises(InputError, match="cannot read the API key file"):
        resolve_api_key(None, tmp_path / "missing", {})


async def test_a_call_the_model_makes_comes_back_as_tool_calls(make_client: ClientFactory) -> None:
    fake = FakeEngine(tools=True, reply=f"Let me look. {TOOL_CALL}")
    client = make_client(fake)
    response = await client.post(
        "/v1/chat/completions", json=chat(tools=[WEATHER], max_tokens=64)
    )  # tool_choice auto
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert fake.requests[-1].params.grammar is None  # auto: no grammar
    required = await client.post(
        "/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="required", max_tokens=64)
    )
    grammar = fake.requests[-1].params.grammar
    assert grammar is not None and grammar.startswith('root ::= "<tool_call>\\n"')
    assert required.json()["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            '<tool_call>\n{"name": "unknown", "arguments": {}}\n</tool_call>', id="unknown-function"
        ),
        pytest.param("<tool_call>\n{not json}\n</tool_call>", id="not-json"),
        pytest.param(
            '<tool_call>\n{"name": "get_weather", "arguments": [1]}\n</tool_call>', id="bad-arguments"
        ),
        pytest.param("Sunny, I think.", id="plain-text"),
    ],
)
async def test_what_is_not_a_well_formed_call_stays_text(make_client: ClientFactory, reply: str) -> None:
    client = make_client(FakeEngine(tools=True, reply=reply))
    choice = (await client.post("/v1/chat/completions", json=chat(tools=[WEATHER], max_tokens=64))).json()[
        "choices"
    ][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == reply
    assert "tool_calls" not in choice["message"]


async def test_tools_and_response_format_together_are_400(make_client: ClientFactory) -> None:
    client = make_client(FakeEngine(tools=True))
    body = chat(tools=[WEATHER], response_format={"type": "json_object"})
    assert_error(await client.post("/v1/chat/completions", json=body), 400, param="response_format")
