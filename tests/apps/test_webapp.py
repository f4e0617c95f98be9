"""The web app's logic through Streamlit's AppTest: settings, the server-down page, history, export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pykaito.apps.history import HistoryStore
from tests.apps.standin import Behaviour, standin_server
from tests.netutil import free_port

WEBAPP = str(resources.files("pykaito.apps") / "webapp.py")
EXAMPLE_APP = Path(__file__).parents[2] / "examples" / "phi4_chat_app.py"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Behaviour]:
    with standin_server(Behaviour()) as (url, behaviour):
        monkeypatch.setenv("KAITO_ENDPOINT", url)
        yield behaviour


def app() -> AppTest:
    at = AppTest.from_file(WEBAPP, default_timeout=30)
    at.run()
    assert not at.exception
    return at


def widget_by_label(elements: object, label: str) -> object:
    found = [e for e in elements if e.label == label]  # type: ignore[attr-defined]
    assert found, f"no widget labelled {label!r}"
    return found[0]


def test_server_down_page_is_clear_and_does_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KAITO_ENDPOINT", url)
    at = app()
    assert [e.value for e in at.error] == [f"Cannot reach {url}: is `kaito connect` or `kaito up` running?"]
    assert any("kaito up" in m.value for m in at.markdown)
    assert at.chat_input[0].disabled
    assert any(f":red[●] offline · {url}" in c.value for c in at.sidebar.caption)
    assert "Model" not in [s.label for s in at.selectbox]  # no model list without a server


def test_loading_server_then_ready(standin: Behaviour) -> None:
    standin.health_status = 503
    at = app()
    assert "is loading its model" in at.warning[0].value
    assert at.chat_input[0].disabled
    standin.health_status = 200
    at.run()
    assert not at.warning and not at.error
    assert not at.chat_input[0].disabled


def test_settings_reach_the_server(standin: Behaviour) -> None:
    at = app()
    model = widget_by_label(at.selectbox, "Model")
    assert model.options == ["standin-model"]  # type: ignore[attr-defined]
    widget_by_label(at.slider, "Temperature").set_value(0.3)  # type: ignore[attr-defined]
    widget_by_label(at.slider, "Top p").set_value(0.9)  # type: ignore[attr-defined]
    widget_by_label(at.number_input, "Max tokens").set_value(32)  # type: ignore[attr-defined]
    widget_by_label(at.selectbox, "System prompt").set_value("Concise")  # type: ignore[attr-defined]
    at.run()
    assert widget_by_label(at.text_area, "System message").value == "Answer in as few words as possible."  # type: ignore[attr-defined]
    at.chat_input[0].set_value("What is KAITO?").run()
    assert not at.exception
    sent = standin.requests[-1]
    assert sent["temperature"] == 0.3
    assert sent["top_p"] == 0.9
    assert sent["max_tokens"] == 32
    assert sent["model"] == "standin-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in as few words as possible."},
        {"role": "user", "content": "What is KAITO?"},
    ]
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert "Hello from the stand-in." in [m.value for m in at.markdown]
    captions = [c.value for c in at.caption]
    assert any("11 → 5 tokens" in c and "TTFT" in c and "tokens/s" in c for c in captions)
    session = [c.value for c in at.sidebar.caption if c.value.startswith("Session:")]
    assert session and "Session: 1 reply · 11 prompt + 5 completion tokens" in session[0]


def test_custom_system_prompt_switches_preset(standin: Behaviour) -> None:
    at = app()
    widget_by_label(at.text_area, "System message").set_value("Talk like a pirate.")  # type: ignore[attr-defined]
    at.run()
    assert widget_by_label(at.selectbox, "System prompt").value == "Custom"  # type: ignore[attr-defined]
    at.chat_input[0].set_value("hi").run()
    assert standin.requests[-1]["messages"][0] == {"role": "system", "content": "Talk like a pirate."}


def test_conversation_is_saved_listed_and_resumed(standin: Behaviour) -> None:
    at = app()
    widget_by_label(at.slider, "Temperature").set_value(0.3)  # type: ignore[attr-defined]
    widget_by_label(at.selectbox, "System prompt").set_value("Concise")  # type: ignore[attr-defined]
    at.run()
    at.chat_input[0].set_value("first question").run()
    at.chat_input[0].set_value("second question").run()
    store = HistoryStore()
    (conv,) = store.list_conversations()
    assert conv.title == "first question"
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant", "user", "assistant"]
    assert store.messages(conv.id)[-1].completion_tokens == 5
    # the second request carried the whole conversation
    assert [m["content"] for m in standin.requests[-1]["messages"][1:]] == [
        "first question",
        "Hello from the stand-in.",
        "second question",
    ]
    # a new browser session (a reload) with ?c=<id> resumes it
    fresh = AppTest.from_file(WEBAPP, default_timeout=30)
    fresh.query_params["c"] = conv.id
    fresh.run()
    assert fresh.title[0].value == "first question"
    assert len(fresh.chat_message) == 4
    # with the settings it was last used with
    assert widget_by_label(fresh.selectbox, "System prompt").value == "Concise"  # type: ignore[attr-defined]
    assert widget_by_label(fresh.slider, "Temperature").value == 0.3  # type: ignore[attr-defined]
    assert "first question" in [b.label for b in fresh.sidebar.button]
    # New chat empties the page; the conversation stays in the sidebar
    widget_by_label(fresh.sidebar.button, "New chat").click()  # type: ignore[attr-defined]
    fresh.run()
    assert fresh.title[0].value == "New chat" and not fresh.chat_message
    widget_by_label(fresh.sidebar.button, "first question").click()  # type: ignore[attr-defined]
    fresh.run()
    assert len(fresh.chat_message) == 4


def test_rename_delete_and_export(standin: Behaviour) -> None:
    at = app()
    at.chat_input[0].set_value("export me").run()
    conv = HistoryStore().list_conversations()[0]
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Markdown", "JSON"]
    urls = [d.proto.url for d in at.get("download_button")]
    assert urls[0].endswith(".md") and urls[1].endswith(".json")
    exported = json.loads(HistoryStore().export_json(conv.id))
    assert [m["content"] for m in exported["messages"]] == ["export me", "Hello from the stand-in."]

    widget_by_label(at.text_input, "Title").set_value("Renamed chat")  # type: ignore[attr-defined]
    widget_by_label(at.button, "Rename").click()  # type: ignore[attr-defined]
    at.run()
    assert HistoryStore().get(conv.id).title == "Renamed chat"
    assert at.title[0].value == "Renamed chat"

    widget_by_label(at.button, "Delete").click()  # type: ignore[attr-defined]
    at.run()
    assert "Delete this conversation for good?" in at.warning[0].value
    assert HistoryStore().list_conversations()  # not yet
    [yes] = [b for b in at.button if b.key == "delete-yes"]
    yes.click()
    at.run()
    assert HistoryStore().list_conversations() == []
    assert at.title[0].value == "New chat"


def test_sidebar_search(standin: Behaviour) -> None:
    store = HistoryStore()
    for question in ("kubernetes operators", "pasta recipes"):
        conv = store.create_conversation()
        store.add_message(conv.id, "user", question)
    at = app()
    widget_by_label(at.sidebar.text_input, "Search").set_value("pasta")  # type: ignore[attr-defined]
    at.run()
    titles = [b.label for b in at.sidebar.button if b.key and b.key.startswith("conv-")]
    assert titles == ["pasta recipes"]


def test_reply_error_is_shown_not_raised(standin: Behaviour) -> None:
    at = app()
    standin.chat_status = 400
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    assert any("HTTP 400: max_tokens must be at least 1" in e.value for e in at.error)


def test_guide_example_runs_the_packaged_app(standin: Behaviour) -> None:
    at = AppTest.from_file(str(EXAMPLE_APP), default_timeout=30)
    at.run()
    assert not at.exception
    assert at.sidebar.title[0].value == "pykaito chat"
    at.chat_input[0].set_value("hi").run()
    assert "Hello from the stand-in." in [m.value for m in at.markdown]
