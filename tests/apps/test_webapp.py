"""The web app's logic through Streamlit's AppTest: settings, the server-down page, history, export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pykaito.apps.export import to_json
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
    assert fresh.subheader[0].value == "first question"
    assert len(fresh.chat_message) == 4
    # with the settings it was last used with
    assert widget_by_label(fresh.selectbox, "System prompt").value == "Concise"  # type: ignore[attr-defined]
    assert widget_by_label(fresh.slider, "Temperature").value == 0.3  # type: ignore[attr-defined]
    assert "first question" in [b.label for b in fresh.sidebar.button]
    assert "Today" in [c.value for c in fresh.sidebar.caption]  # the list is grouped by date
    # New chat empties the page; the conversation stays in the sidebar
    widget_by_label(fresh.sidebar.button, "New chat").click()  # type: ignore[attr-defined]
    fresh.run()
    assert fresh.subheader[0].value == "New chat" and not fresh.chat_message
    widget_by_label(fresh.sidebar.button, "first question").click()  # type: ignore[attr-defined]
    fresh.run()
    assert len(fresh.chat_message) == 4


def test_rename_delete_and_export(standin: Behaviour) -> None:
    at = app()
    at.chat_input[0].set_value("export me").run()
    conv = HistoryStore().list_conversations()[0]
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Markdown", "JSON", "PDF"]
    exported = json.loads(to_json(HistoryStore(), conv.id))
    assert [m["content"] for m in exported["messages"]] == ["export me", "Hello from the stand-in."]

    widget_by_label(at.text_input, "Title").set_value("Renamed chat")  # type: ignore[attr-defined]
    widget_by_label(at.button, "Rename").click()  # type: ignore[attr-defined]
    at.run()
    assert HistoryStore().get(conv.id).title == "Renamed chat"
    assert at.subheader[0].value == "Renamed chat"

    at.button(key="delete").click().run()
    assert "Delete this conversation for good?" in at.warning[0].value
    assert HistoryStore().list_conversations()  # not yet
    [yes] = [b for b in at.button if b.key == "delete-yes"]
    yes.click()
    at.run()
    assert HistoryStore().list_conversations() == []
    assert at.subheader[0].value == "New chat"


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
    assert "**pasta** recipes" in [c.value for c in at.sidebar.caption]  # the snippet, match in bold


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


def button(at: AppTest, label: str, index: int = -1) -> object:
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in at.button]}"
    return found[index]


def test_retry_edit_branches_and_delete(standin: Behaviour) -> None:
    at = app()
    at.chat_input[0].set_value("first question").run()
    store = HistoryStore()
    (conv,) = store.list_conversations()
    # Retry: a second reply next to the first, with ‹ 2/2 › to switch between them
    standin.words = ("Another", " answer.")
    button(at, "Retry").click()  # type: ignore[attr-defined]
    at.run()
    assert not at.exception
    assert [m.content for m in store.messages(conv.id)] == ["first question", "Another answer."]
    assert "2/2" in [c.value for c in at.caption]
    button(at, "‹").click()  # type: ignore[attr-defined]
    at.run()
    assert [m.content for m in store.messages(conv.id)][1] == "Hello from the stand-in."
    assert "1/2" in [c.value for c in at.caption]
    # Edit the question and send it: a new branch; the old one stays reachable
    [edit] = [t for t in at.text_area if t.label == "Edit the question"]
    edit.set_value("first question, edited")
    button(at, "Send", 0).click()  # type: ignore[attr-defined]
    at.run()
    assert not at.exception
    assert [m.content for m in store.messages(conv.id)] == ["first question, edited", "Another answer."]
    assert standin.requests[-1]["messages"][-1] == {"role": "user", "content": "first question, edited"}
    assert "2/2" in [c.value for c in at.caption]
    # Delete the reply: it goes, the question stays
    reply = store.messages(conv.id)[1]
    at.button(key=f"del-{reply.id}").click().run()
    assert [m.content for m in store.messages(conv.id)] == ["first question, edited"]


def test_a_cut_reply_is_kept_with_its_reason_and_can_be_continued(standin: Behaviour) -> None:
    standin.words = tuple(f" w{i}" for i in range(10))
    standin.cut_after = 4
    at = app()
    at.chat_input[0].set_value("talk").run()
    store = HistoryStore()
    (conv,) = store.list_conversations()
    _, cut = store.messages(conv.id)
    assert (cut.content, cut.finish_reason) == (" w0 w1 w2 w3", "error")
    assert any("interrupted: the connection to the server was lost" in c.value for c in at.caption)
    standin.cut_after = None
    standin.words = (" w4", " w5.")
    button(at, "Continue").click()  # type: ignore[attr-defined]
    at.run()
    assert not at.exception
    *_, sent_partial, sent_ask = standin.requests[-1]["messages"]
    assert sent_partial == {"role": "assistant", "content": " w0 w1 w2 w3"}
    assert sent_ask["role"] == "user" and "Continue" in sent_ask["content"]
    assert [m.content for m in store.messages(conv.id)] == ["talk", " w0 w1 w2 w3 w4 w5."]


def test_the_demo_model_is_named_as_such(standin: Behaviour) -> None:
    standin.model = "smollm2-135m-instruct"
    at = app()
    assert any("small demo model" in c.value and "kaito up --model" in c.value for c in at.caption)
    standin.model = "phi-4-mini-instruct"
    cached_clear()
    at = app()
    assert not any("small demo model" in c.value for c in at.caption)


def cached_clear() -> None:
    import streamlit as st

    st.cache_data.clear()


def test_a_conversation_deleted_elsewhere_is_a_message_not_a_traceback(standin: Behaviour) -> None:
    at = app()
    at.chat_input[0].set_value("hello").run()
    store = HistoryStore()
    (conv,) = store.list_conversations()
    store.delete(conv.id)  # as the terminal chat or another tab would
    at.run()
    assert not at.exception
    assert any("was deleted" in e.value for e in at.error)
    assert at.subheader[0].value == "New chat"


def test_history_is_readable_with_the_server_down(monkeypatch: pytest.MonkeyPatch) -> None:
    store = HistoryStore()
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "saved question")
    store.add_message(conv.id, "assistant", "saved answer")
    monkeypatch.setenv("KAITO_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(WEBAPP, default_timeout=30)
    at.query_params["c"] = conv.id
    at.run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value in ("saved question", "saved answer")] == [
        "saved question",
        "saved answer",
    ]
    assert at.chat_input[0].disabled
