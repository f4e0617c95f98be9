"""Titles written by the model after the first exchange: cleaned, in the background, with a fallback."""

from __future__ import annotations

import io
import re
import time
from importlib import resources

import pexpect
import pytest
from streamlit.testing.v1 import AppTest

from pykaito.apps.history import TITLE_LENGTH, HistoryStore, title_from
from pykaito.apps.titles import TitleJob, clean_title, first_exchange_title
from tests.apps.standin import Behaviour, standin_server
from tests.apps.test_terminal import spawn_chat, wait_prompt

WEBAPP = str(resources.files("pykaito.apps") / "webapp.py")
QUESTION = "How do octopuses change colour so fast? I saw one at the aquarium."
FALLBACK = title_from(QUESTION)


@pytest.fixture(autouse=True)
def titles_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_TITLES", "1")


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        pytest.param("Octopus Colour Changes", "Octopus Colour Changes", id="plain"),
        pytest.param('"Octopus colours."\n\nThis title sums it up.', "Octopus colours", id="quotes-lines"),
        pytest.param("Title: **Octopus** _camouflage_", "Octopus camouflage", id="label-markup"),
        pytest.param("  # Cephalopods\tand\x1b[31m colour\u2028x", "Cephalopods and colour", id="control"),
        pytest.param(
            "The remarkable speed of colour change in octopuses explained simply",
            "The remarkable speed of colour change…",
            id="long",
        ),
        pytest.param("", None, id="empty"),
        pytest.param("\n  \n", None, id="blank"),
        pytest.param('"..."', None, id="punctuation"),
    ],
)
def test_clean_title(raw: str, title: str | None) -> None:
    assert clean_title(raw) == title
    if title is not None:
        assert "\n" not in title and len(title) <= TITLE_LENGTH


def conversation(store: HistoryStore, answer: str = "They use chromatophores.") -> str:
    conv = store.create_conversation(model="m")
    store.add_message(conv.id, "user", QUESTION)
    store.add_message(conv.id, "assistant", answer, finish_reason="stop")
    assert store.get(conv.id).title == FALLBACK
    return conv.id


def turns(store: HistoryStore, conv_id: str) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in store.messages(conv_id)]


@pytest.mark.timeout(300)
def test_the_real_model_titles_the_conversation(runtime_url: str) -> None:
    store = HistoryStore()
    conv_id = conversation(
        store, "Octopuses change colour with chromatophores, small sacs of pigment in the skin."
    )
    assert turns(store, conv_id)[0] == ("user", QUESTION)
    # the apps' timeout is 30 s; a loaded test machine gets more, to see the model's title
    answer = turns(store, conv_id)[1][1]
    job = TitleJob(store, conv_id, runtime_url, None, None, QUESTION, answer, timeout_s=200).start()
    assert job.wait(240)
    title = store.get(conv_id).title
    assert job.title == title != FALLBACK
    assert title == clean_title(title)  # one line, cleaned, within the length cap
    assert 2 <= len(title) <= TITLE_LENGTH


def test_no_title_job_unless_one_complete_first_exchange() -> None:
    store = HistoryStore()
    conv_id = conversation(store)
    url = "http://127.0.0.1:9"
    assert first_exchange_title(store, conv_id, url, None, None, turns(store, conv_id), "stopped") is None
    assert first_exchange_title(store, conv_id, url, None, None, turns(store, conv_id) * 2, "stop") is None
    assert (
        first_exchange_title(store, conv_id, url, None, None, [("user", "q"), ("assistant", " ")], "stop")
        is None
    )


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(Behaviour(complete_status=500), id="server-error"),
        pytest.param(Behaviour(complete_status=404), id="no-such-route"),
        pytest.param(Behaviour(complete_text="\n\n  ..."), id="nothing-usable"),
        pytest.param(Behaviour(complete_delay_s=6.0), id="timeout"),
    ],
)
def test_any_failure_keeps_the_first_sentence(behaviour: Behaviour) -> None:
    store = HistoryStore()
    conv_id = conversation(store)
    with standin_server(behaviour) as (url, seen):
        started = time.monotonic()
        job = TitleJob(store, conv_id, url, None, "standin-model", QUESTION, "x", timeout_s=1.0).start()
        assert job.wait(30)
        assert time.monotonic() - started < 25
        assert [r.get("max_tokens") for r in seen.requests] == [16]
        assert seen.requests[0].get("stream") in (None, False)
    assert job.title is None
    assert store.get(conv_id).title == FALLBACK


def test_a_rename_meanwhile_wins() -> None:
    store = HistoryStore()
    conv_id = conversation(store)
    with standin_server(Behaviour(complete_delay_s=1.0)) as (url, _):
        job = TitleJob(store, conv_id, url, None, "standin-model", QUESTION, "x").start()
        store.rename(conv_id, "My own title")
        assert job.wait(30)
    assert job.title is None
    assert store.get(conv_id).title == "My own title"


# the apps


def wait_for_title(store: HistoryStore, expected: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while [c.title for c in store.list_conversations()] != [expected]:
        assert time.monotonic() < deadline, [c.title for c in store.list_conversations()]
        time.sleep(0.1)


def test_webapp_shows_the_generated_title() -> None:
    with standin_server(Behaviour(complete_text="Octopus Colour Tricks")) as (url, seen):
        at = AppTest.from_file(WEBAPP, default_timeout=30)
        at.session_state["endpoint"] = url
        at.run()
        at.chat_input[0].set_value(QUESTION).run()
        assert not at.exception
        wait_for_title(HistoryStore(), "Octopus Colour Tricks")
        at.run()
        assert at.subheader[0].value == "Octopus Colour Tricks"
        assert any(b.label == "Octopus Colour Tricks" for b in at.sidebar.button)
        (title_request,) = [r for r in seen.requests if not r.get("stream")]
        assert QUESTION in title_request["messages"][-1]["content"]
        assert title_request["max_tokens"] == 16


def test_webapp_keeps_the_first_sentence_when_the_title_fails() -> None:
    with standin_server(Behaviour(complete_status=500)) as (url, seen):
        at = AppTest.from_file(WEBAPP, default_timeout=30)
        at.session_state["endpoint"] = url
        at.run()
        at.chat_input[0].set_value(QUESTION).run()
        assert not at.exception
        deadline = time.monotonic() + 30
        while not [r for r in seen.requests if not r.get("stream")]:
            assert time.monotonic() < deadline, "no title request"
            time.sleep(0.1)
        time.sleep(0.5)  # let the failed answer land (a title would be written at once)
        at.run()
        assert not at.exception
        assert at.subheader[0].value == FALLBACK
        assert not at.error


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_terminal_titles_in_the_background() -> None:
    # the title takes 8 s to come: the chat goes on meanwhile, then /history shows it
    with standin_server(Behaviour(complete_text="Octopus Colour Tricks", complete_delay_s=8.0)) as (
        url,
        seen,
    ):
        transcript = io.StringIO()
        child = spawn_chat(url)
        child.logfile_read = transcript
        try:
            wait_prompt(child)
            child.sendline(QUESTION)
            child.expect("TTFT")
            wait_prompt(child)
            started = time.monotonic()
            child.sendline("And squid?")
            child.expect("TTFT")
            wait_prompt(child)
            assert time.monotonic() - started < 8.0, "the second reply waited for the title"
            assert HistoryStore().list_conversations()[0].title == FALLBACK
            deadline = time.monotonic() + 60
            while True:
                child.sendline("/history")
                index = child.expect(["Octopus Colour Tricks", re.escape(FALLBACK[:20])])
                wait_prompt(child)
                if index == 0:
                    break
                assert time.monotonic() < deadline, "the title never came"
                time.sleep(0.5)
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert len([r for r in seen.requests if not r.get("stream")]) == 1  # once, after the first exchange


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_terminal_keeps_the_first_sentence_when_the_server_errors() -> None:
    with standin_server(Behaviour(complete_status=500)) as (url, seen):
        child = spawn_chat(url)
        try:
            wait_prompt(child)
            child.sendline(QUESTION)
            child.expect("TTFT")
            wait_prompt(child)
            deadline = time.monotonic() + 30
            while not [r for r in seen.requests if not r.get("stream")]:
                assert time.monotonic() < deadline, "no title request"
                time.sleep(0.1)
            child.sendline("/history")
            child.expect(re.escape(FALLBACK[:20]))
            wait_prompt(child)
            child.sendline("/exit")
            child.expect(pexpect.EOF)
            output = child.before or ""
        finally:
            child.close(force=True)
    assert "Traceback" not in output and "stand-in failure" not in output
    assert HistoryStore().list_conversations()[0].title == FALLBACK
