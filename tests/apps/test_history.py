"""The SQLite conversation history: list, resume, rename, delete, search, export."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pykaito.apps.history import HistoryError, HistoryStore, data_dir, title_from
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
    assert title_from("x" * 100).endswith("…") and len(title_from("x" * 100)) == 60


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
        pytest.param("100%", ["percent"], id="like-wildcards-are-literal"),
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
    if expected == ["k8s"]:
        assert "Kubernetes" in hits[0].snippet


def test_export_markdown() -> None:
    store = HistoryStore()
    conv_id = chat(store, "Show code", "```python\nprint('hi')\n```")
    text = store.export_markdown(conv_id)
    assert text.startswith("# Show code\n")
    assert "- Model: `m1`" in text
    assert "## System\n\nBe brief.\n" in text
    assert "## You · " in text and "## Assistant · " in text
    assert "```python\nprint('hi')\n```" in text
    assert "*7 tokens · TTFT 125 ms · 20.0 tokens/s*" in text


def test_export_json_round_trips() -> None:
    store = HistoryStore()
    conv_id = chat(store, "Grüße", "Hallo")
    document = json.loads(store.export_json(conv_id))
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
