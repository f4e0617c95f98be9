"""The SQLite conversation history: list, resume, rename, delete, search, export."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from pykaito.apps.export import to_json, to_markdown, to_pdf
from pykaito.apps.history import (
    ConversationGone,
    HistoryError,
    HistoryStore,
    chat_turns,
    data_dir,
    date_group,
    plural,
    title_from,
)
from pykaito.client.chat import ReplyStats
from pykaito.errors import InputError

STATS = ReplyStats(
    prompt_tokens=12,
    completion_tokens=7,
    ttft_s=0.125,
    duration_s=0.5,
    tokens_per_s=20.0,
    finish_reason="stop",
    usage_reported=True,
)


def chat(store: HistoryStore, question: str, answer: str) -> str:
    conv = store.create_conversation(model="m1", system_prompt="Be brief.", params={"temperature": 0.2})
    store.add_message(conv.id, "user", question)
    store.add_message(conv.id, "assistant", answer, model="m1", params={"temperature": 0.2}, stats=STATS)
    return conv.id


def test_lives_in_kaito_home_with_wal(kaito_home: Path) -> None:
    store = HistoryStore()
    assert data_dir() == kaito_home
    assert store.path == kaito_home / "history.db"
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_messages_keep_usage_latency_and_parameters() -> None:
    store = HistoryStore()
    conv_id = chat(store, "What is KAITO?", "An operator.")
    first, second = store.messages(conv_id)
    assert (first.role, first.content, first.completion_tokens) == ("user", "What is KAITO?", None)
    assert second.role == "assistant"
    assert (second.prompt_tokens, second.completion_tokens) == (12, 7)
    assert (second.ttft_s, second.tokens_per_s, second.finish_reason) == (0.125, 20.0, "stop")
    assert second.params == {"temperature": 0.2}
    assert second.model == "m1"
    assert second.created_at >= first.created_at


def test_first_question_titles_the_conversation() -> None:
    store = HistoryStore()
    conv_id = chat(store, "How do I size   a GPU\nfor phi-4?", "Use the planner.")
    assert store.get(conv_id).title == "How do I size a GPU for phi-4?"


@pytest.mark.parametrize(
    ("prompt", "title"),
    [
        pytest.param("x" * 100, "x" * 39 + "…", id="one-long-word"),
        pytest.param("Hello! Tell me a fun fact about octopuses.", "Hello!", id="first-sentence"),
        pytest.param(
            "Explain how Kubernetes operators reconcile custom resources in detail",
            "Explain how Kubernetes operators…",
            id="cut-at-a-word",
        ),
        pytest.param("   ", "New chat", id="blank"),
    ],
)
def test_titles_are_short(prompt: str, title: str) -> None:
    assert title_from(prompt) == title
    assert len(title_from(prompt)) <= 40


@pytest.mark.parametrize(
    ("day", "group"),
    [
        pytest.param("2026-11-30T10:00:00", "Today", id="today"),
        pytest.param("2026-11-29T23:00:00", "Yesterday", id="yesterday"),
        pytest.param("2026-11-24T12:00:00", "Previous 7 days", id="week"),
        pytest.param("2026-11-20T12:00:00", "Older", id="older"),
        pytest.param("garbage", "Older", id="unreadable"),
    ],
)
def test_date_groups(day: str, group: str) -> None:
    assert date_group(day, today=date(2026, 11, 30)) == group


def test_plurals() -> None:
    assert [plural(1, "message"), plural(2, "message"), plural(1, "reply", "replies")] == [
        "1 message",
        "2 messages",
        "1 reply",
    ]


def test_list_is_most_recent_first_and_resumes() -> None:
    store = HistoryStore()
    older = chat(store, "first", "one")
    newer = chat(store, "second", "two")
    assert [c.id for c in store.list_conversations()] == [newer, older]
    store.add_message(older, "user", "back to the first")
    listed = store.list_conversations()
    assert [c.id for c in listed] == [older, newer]
    assert listed[0].message_count == 3
    # A new store over the same file (a restart) sees the same conversation.
    resumed = HistoryStore().messages(older[:6])
    assert [m.content for m in resumed] == ["first", "one", "back to the first"]


def test_rename_and_delete() -> None:
    store = HistoryStore()
    conv_id = chat(store, "q", "a")
    assert store.rename(conv_id, "  Sizing notes ").title == "Sizing notes"
    with pytest.raises(InputError, match="cannot be empty"):
        store.rename(conv_id, "  ")
    store.delete(conv_id)
    assert store.list_conversations() == []
    with pytest.raises(HistoryError, match=f"no conversation '{conv_id}'"):
        store.messages(conv_id)
    with sqlite3.connect(store.path) as db:  # the messages went with it
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_ambiguous_prefix_is_refused() -> None:
    store = HistoryStore()
    ids = [chat(store, f"q{i}", "a") for i in range(20)]
    with pytest.raises(HistoryError, match="matches"):
        store.get("")
    assert store.get(ids[3]).id == ids[3]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("kubernetes", ["k8s"], id="message-text"),
        pytest.param("KUBERNETES", ["k8s"], id="case-insensitive"),
        pytest.param("Recipes", ["cooking"], id="title"),
        pytest.param("operat", ["k8s"], id="word-prefix"),
        pytest.param("operators kubernetes", ["k8s"], id="all-words-any-order"),
        pytest.param('100% "sure', ["percent"], id="punctuation-is-not-query-syntax"),
        pytest.param("100%", ["percent", "plain"], id="title-match-first"),
        pytest.param("nothing-like-this", [], id="no-match"),
    ],
)
def test_search(query: str, expected: list[str]) -> None:
    store = HistoryStore()
    names = {
        "k8s": chat(store, "Tell me about Kubernetes operators", "They reconcile."),
        "cooking": chat(store, "pasta?", "Boil water."),
        "percent": chat(store, "is it 100% sure?", "No."),
        "plain": chat(store, "100 items", "ok"),
    }
    store.rename(names["cooking"], "Recipes")
    hits = store.search(query)
    by_id = {v: k for k, v in names.items()}
    assert [by_id[h.conversation.id] for h in hits] == expected
    if expected == ["k8s"] and query != "operat":
        assert "**Kubernetes**" in hits[0].snippet


def test_search_ranks_by_relevance_and_forgets_deleted_messages() -> None:
    store = HistoryStore()
    once = chat(store, "a question about gpus and other things entirely unrelated to it", "ok")
    often = chat(store, "gpus gpus gpus", "gpus")
    assert [h.conversation.id for h in store.search("gpus")] == [often, once]
    store.delete(often)
    assert [h.conversation.id for h in store.search("gpus")] == [once]
    (_, reply) = store.messages(once)
    store.delete_message(reply.id)
    assert store.search("ok") == []


def test_export_markdown() -> None:
    store = HistoryStore()
    conv_id = chat(store, "Show code", "```python\nprint('hi')\n```")
    text = to_markdown(store, conv_id)
    assert text.startswith("# Show code\n")
    assert "- Model: `m1`" in text
    assert "## System\n\nBe brief.\n" in text
    assert "## You · " in text and "## Assistant · " in text
    assert "```python\nprint('hi')\n```" in text
    assert "*7 tokens · TTFT 125 ms · 20.0 tokens/s*" in text


def test_export_json_round_trips() -> None:
    store = HistoryStore()
    conv_id = chat(store, "Grüße", "Hallo")
    document = json.loads(to_json(store, conv_id))
    assert document["conversation"]["id"] == conv_id
    assert document["conversation"]["system_prompt"] == "Be brief."
    assert [m["content"] for m in document["messages"]] == ["Grüße", "Hallo"]
    assert document["messages"][1]["completion_tokens"] == 7
    assert document["messages"][1]["tokens_per_s"] == 20.0


def test_unwritable_home_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(HistoryError, match="cannot open the history database"):
        HistoryStore(blocker / "history.db")


def test_branches_keep_edited_questions_and_regenerated_replies() -> None:
    store = HistoryStore()
    conv_id = chat(store, "first", "answer one")
    question, first_reply = store.messages(conv_id)
    # regenerate: a sibling reply; the old one stays reachable
    store.rewind(conv_id, question.id)
    store.add_message(conv_id, "assistant", "answer two")
    assert [m.content for m in store.messages(conv_id)] == ["first", "answer two"]
    second_reply = store.messages(conv_id)[1]
    assert store.branches(second_reply).ids == (first_reply.id, second_reply.id)
    assert store.branches(second_reply).index == 1
    store.add_message(conv_id, "user", "follow-up")
    # edit the first question: a new branch from the start
    store.add_message(conv_id, "user", "first, edited", parent_id=None, branch=True)
    store.add_message(conv_id, "assistant", "answer three")
    assert [m.content for m in store.messages(conv_id)] == ["first, edited", "answer three"]
    # switch back: the branch through the old question, down to its latest message
    store.show_branch(conv_id, question.id)
    assert [m.content for m in store.messages(conv_id)] == ["first", "answer two", "follow-up"]
    store.show_branch(conv_id, first_reply.id)
    assert [m.content for m in store.messages(conv_id)] == ["first", "answer one"]
    # delete a message: it and what followed it go, the branch shows its parent
    store.show_branch(conv_id, second_reply.id)
    store.delete_message(second_reply.id)
    assert [m.content for m in store.messages(conv_id)] == ["first"]
    assert [m.content for m in to_json_messages(store, conv_id)] == ["first"]


def to_json_messages(store: HistoryStore, conv_id: str) -> list[object]:
    class Item:
        def __init__(self, content: str) -> None:
            self.content = content

    return [Item(m["content"]) for m in json.loads(to_json(store, conv_id))["messages"]]


def test_interrupted_replies_keep_their_reason_and_empty_ones_are_not_sent() -> None:
    store = HistoryStore()
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "q1")
    store.add_message(conv.id, "assistant", "", finish_reason="stopped")
    store.add_message(conv.id, "user", "q2")
    store.add_message(conv.id, "assistant", "partial", finish_reason="error")
    messages = store.messages(conv.id)
    assert [m.finish_reason for m in messages] == [None, "stopped", None, "error"]
    assert chat_turns(messages) == [
        {"role": "user", "content": "q1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "partial"},
    ]
    text = to_markdown(store, conv.id)
    assert "*stopped*" in text and "*interrupted: the connection to the server was lost*" in text


def test_a_conversation_deleted_elsewhere_is_a_clear_error() -> None:
    mine, theirs = HistoryStore(), HistoryStore()
    conv = mine.create_conversation()
    mine.add_message(conv.id, "user", "hello")
    theirs.delete(conv.id)
    with pytest.raises(ConversationGone, match="was deleted"):
        mine.add_message(conv.id, "assistant", "late reply")
    with pytest.raises(ConversationGone, match="was deleted"):
        mine.update_settings(conv.id, model="m")
    with pytest.raises(ConversationGone):
        mine.messages(conv.id)


def test_sqlite_errors_become_history_errors(kaito_home: Path) -> None:
    store = HistoryStore()
    (kaito_home / "history.db").unlink()
    (kaito_home / "history.db").mkdir()  # the file turned into a directory under us
    with pytest.raises(HistoryError, match="history database") as caught:
        store.list_conversations()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_update_settings_keeps_what_is_not_given() -> None:
    store = HistoryStore()
    conv = store.create_conversation(model="m1", system_prompt="Be brief.", params={"temperature": 0.2})
    store.update_settings(conv.id, model="m2")
    again = store.get(conv.id)
    assert (again.model, again.system_prompt, again.params) == ("m2", "Be brief.", {"temperature": 0.2})
    store.update_settings(conv.id, system_prompt="")
    assert store.get(conv.id).system_prompt is None


def test_an_older_database_is_migrated_in_place(kaito_home: Path) -> None:
    path = kaito_home / "history.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL, model TEXT, system_prompt TEXT, params TEXT NOT NULL DEFAULT '{}');
            CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL
                REFERENCES conversations(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,
                created_at TEXT NOT NULL, model TEXT, params TEXT NOT NULL DEFAULT '{}',
                prompt_tokens INTEGER, completion_tokens INTEGER, ttft_s REAL, duration_s REAL,
                tokens_per_s REAL, finish_reason TEXT);
            INSERT INTO conversations VALUES ('abc', 'Old one', '2026-01-01T00:00:00+00:00',
                '2026-01-01T00:00:00+00:00', NULL, NULL, '{}');
            INSERT INTO messages (conversation_id, role, content, created_at)
                VALUES ('abc', 'user', 'old question about tensors', '2026-01-01T00:00:00+00:00'),
                       ('abc', 'assistant', 'old answer', '2026-01-01T00:00:01+00:00');
            """
        )
    db.close()
    store = HistoryStore()
    assert [m.content for m in store.messages("abc")] == ["old question about tensors", "old answer"]
    assert [h.conversation.id for h in store.search("tensors")] == ["abc"]
    store.add_message("abc", "user", "new question")
    assert len(store.messages("abc")) == 3
    HistoryStore()  # a second open does not migrate again


def test_pdf_export_is_a_real_pdf_with_the_text() -> None:
    store = HistoryStore()
    conv_id = chat(store, "Grüße aus Köln — 東京?", "```python\nprint('hi')\n```\nDone.")
    data = to_pdf(store, conv_id)
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    import io

    from pypdf import PdfReader

    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "Grüße aus Köln" in text and "print('hi')" in text and "Done." in text
