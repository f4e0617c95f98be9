"""Conversation history in SQLite, shared by the terminal chat and the web app.

One database file, ``history.db``, in the data directory (``$KAITO_HOME`` or the platform's
user data directory). WAL mode, and every message is committed as soon as it is complete, so
a crash loses at most the reply that was being generated. No server is needed to read it.

    conversations  id, title, created_at, updated_at, model, system_prompt, params (JSON),
                   head_id (the last message of the branch on show)
    messages       id, conversation_id → conversations, parent_id → messages, role, content,
                   created_at, model, params (JSON), prompt_tokens, completion_tokens, ttft_s,
                   duration_s, tokens_per_s, finish_reason
    messages_fts   full-text index (FTS5) of messages.content

Messages form a tree: editing a question or regenerating a reply adds a sibling, and the
conversation shows the branch that ends at ``head_id``; the other branches stay reachable.

Every ``sqlite3`` error becomes a ``HistoryError`` in ``_connect``, the one place that opens
the database.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_data_dir

from pykaito.errors import InputError, PykaitoError

if TYPE_CHECKING:
    from pykaito.client.chat import ReplyStats

HOME_ENV = "KAITO_HOME"
DB_NAME = "history.db"
TITLE_LENGTH = 40
SCHEMA_VERSION = 2
NEW_TITLE = "New chat"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    model TEXT,
    system_prompt TEXT,
    params TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL,
    model TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    ttft_s REAL,
    duration_s REAL,
    tokens_per_s REAL,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations(updated_at);
"""

# Version 2: branches (parent_id, head_id) and the full-text index.
_MIGRATE_2 = (
    "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE",
    "ALTER TABLE conversations ADD COLUMN head_id INTEGER",
    "UPDATE messages SET parent_id = (SELECT MAX(p.id) FROM messages p"
    " WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id)",
    "UPDATE conversations SET head_id = (SELECT MAX(m.id) FROM messages m"
    " WHERE m.conversation_id = conversations.id)",
    "CREATE INDEX messages_by_parent ON messages(parent_id)",
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
)


class HistoryError(PykaitoError):
    """A conversation cannot be found or the history database cannot be used."""


class ConversationGone(HistoryError):
    """The conversation was deleted (in another window, or by another app) while open here."""


def data_dir() -> Path:
    """Where pykaito keeps user data: ``$KAITO_HOME`` or the platform's user data directory."""
    configured = os.environ.get(HOME_ENV)
    path = Path(configured).expanduser() if configured else Path(user_data_dir("pykaito"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def short_time(iso: str) -> str:
    """``2026-11-27T15:04:05+00:00`` → ``2026-11-27 15:04`` in local time."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def date_group(iso: str, today: date | None = None) -> str:
    """Today, Yesterday, Previous 7 days or Older, in local time."""
    try:
        day = datetime.fromisoformat(iso).astimezone().date()
    except ValueError:
        return "Older"
    today = today or datetime.now().astimezone().date()
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day > today - timedelta(days=7):
        return "Previous 7 days"
    return "Older"


def title_from(text: str) -> str:
    """A short title from the first question: its first sentence, cut at a word boundary."""
    line = " ".join(text.split())
    sentence = re.split(r"(?<=[.?!])\s", line, maxsplit=1)[0]
    if len(sentence) <= TITLE_LENGTH:
        return sentence or NEW_TITLE
    cut = sentence[: TITLE_LENGTH - 1]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "…"


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {word if count == 1 else many or word + 's'}"


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created_at: str
    updated_at: str
    model: str | None
    system_prompt: str | None
    params: dict[str, Any]
    message_count: int = 0
    head_id: int | None = None


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    role: str
    content: str
    created_at: str
    model: str | None = None
    params: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    duration_s: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    parent_id: int | None = None

    def as_chat(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


# Why a reply ended, as the apps show it; "stop" (the model finished) shows nothing.
FINISH_LABELS = {
    "length": "cut at the max-tokens limit",
    "stopped": "stopped",
    "error": "interrupted: the connection to the server was lost",
}


def finish_label(reason: str | None) -> str | None:
    if not reason or reason == "stop":
        return None
    return FINISH_LABELS.get(reason, reason)


def chat_turns(messages: list[Message]) -> list[dict[str, str]]:
    """The messages to send to the model: replies that never got any text are left out."""
    return [m.as_chat() for m in messages if m.content or m.role != "assistant"]


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    snippet: str  # the matching words between ** (Markdown bold)


@dataclass(frozen=True)
class Branches:
    """Where a message sits among its siblings (the answers to the same parent)."""

    ids: tuple[int, ...]
    index: int

    @property
    def count(self) -> int:
        return len(self.ids)


class HistoryStore:
    """The conversation store; one short-lived connection per call, safe across threads."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            self.path = path or data_dir() / DB_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unusable(path, exc) from exc
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                _migrate(db)
        except HistoryError as exc:
            raise self._unusable(path, exc) from exc

    @staticmethod
    def _unusable(path: Path | None, exc: Exception) -> HistoryError:
        where = path or f"in {os.environ.get(HOME_ENV) or user_data_dir('pykaito')}"
        return HistoryError(
            f"cannot open the history database {where}: {exc} — set {HOME_ENV} to a writable directory"
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction; any sqlite3 error becomes a HistoryError."""
        try:
            db = sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the history database {self.path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:  # commits on success, rolls back on error
                yield db
        except sqlite3.Error as exc:
            raise HistoryError(f"the history database {self.path} failed: {exc}") from exc
        finally:
            db.close()

    # conversations

    def create_conversation(
        self,
        title: str = NEW_TITLE,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Conversation:
        stamp = now_iso()
        conv_id = uuid.uuid4().hex[:12]
        with self._connect() as db:
            db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, model, system_prompt, params)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv_id, title, stamp, stamp, model, system_prompt, json.dumps(dict(params or {}))),
            )
        return self.get(conv_id)

    def get(self, conversation_id: str) -> Conversation:
        """A conversation by id or by a unique id prefix."""
        with self._connect() as db:
            rows = db.execute(
                _CONVERSATION_SELECT + " WHERE c.id LIKE ? ESCAPE '\\' GROUP BY c.id",
                (_escape_like(conversation_id) + "%",),
            ).fetchall()
        exact = [r for r in rows if r["id"] == conversation_id]
        if exact:
            rows = exact
        if not rows:
            raise ConversationGone(
                f"no conversation '{conversation_id}' (was it deleted?): /history lists the saved ones"
            )
        if len(rows) > 1:
            raise HistoryError(f"'{conversation_id}' matches {len(rows)} conversations: give more of the id")
        return _conversation(rows[0])

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        """Most recently updated first."""
        with self._connect() as db:
            rows = db.execute(
                _CONVERSATION_SELECT + " GROUP BY c.id ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_conversation(r) for r in rows]

    def rename(self, conversation_id: str, title: str) -> Conversation:
        title = title.strip()
        if not title:
            raise InputError("a conversation title cannot be empty")
        conv = self.get(conversation_id)
        with self._connect() as db:
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conv.id))
        return self.get(conv.id)

    def retitle(self, conversation_id: str, old: str, new: str) -> bool:
        """Set a generated title, only while the title is still ``old`` (a rename by the user wins)."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND title = ?", (new, conversation_id, old)
            )
        return cursor.rowcount == 1

    def update_settings(
        self,
        conversation_id: str,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Change what is given; None keeps a setting, an empty system prompt clears it."""
        with self._connect() as db:
            found = db.execute(
                "UPDATE conversations SET model = COALESCE(?, model),"
                " system_prompt = CASE WHEN ? IS NULL THEN system_prompt ELSE NULLIF(?, '') END,"
                " params = COALESCE(?, params) WHERE id = ?",
                (
                    model,
                    system_prompt,
                    system_prompt,
                    None if params is None else json.dumps(dict(params)),
                    conversation_id,
                ),
            ).rowcount
        if not found:
            raise _gone(conversation_id)

    def delete(self, conversation_id: str) -> None:
        conv = self.get(conversation_id)
        with self._connect() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conv.id,))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Conversations whose title or messages hold every word of ``query``, best match first.

        Titles match by substring; message text through the FTS5 index (words and word
        prefixes, ranked by bm25), with a snippet around the match.
        """
        needle = query.strip()
        words = re.findall(r"\w+", needle)
        if not needle:
            return []
        titles: list[str] = []
        found: dict[str, str] = {}
        with self._connect() as db:
            for row in db.execute(
                "SELECT id FROM conversations WHERE title LIKE ? ESCAPE '\\' ORDER BY updated_at DESC",
                (f"%{_escape_like(needle)}%",),
            ):
                titles.append(row["id"])
            if words:
                match = " ".join('"' + w.replace('"', "") + '"*' for w in words)
                for row in db.execute(
                    "SELECT m.conversation_id AS id, snippet(messages_fts, 0, '**', '**', '…', 12) AS hit"
                    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                    " WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts) LIMIT ?",
                    (match, limit * 5),
                ):
                    found.setdefault(row["id"], " ".join(row["hit"].split()))
        # a title match first (best text match first among them), then the text matches by rank
        order = [i for i in found if i in titles] + [i for i in titles if i not in found]
        order += [i for i in found if i not in titles]
        hits = []
        for conv_id in order[:limit]:
            try:
                conv = self.get(conv_id)
                hits.append(SearchHit(conv, found.get(conv_id, conv.title)))
            except ConversationGone:
                continue  # deleted meanwhile
        return hits

    # messages

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        stats: ReplyStats | None = None,
        finish_reason: str | None = None,
        parent_id: int | None = None,
        branch: bool = False,
    ) -> Message:
        """Append one complete message to the branch on show and commit it.

        ``branch=True`` adds it under ``parent_id`` instead (None: a new first message), next
        to the messages already there: an edited question or a regenerated reply.
        """
        stamp = now_iso()
        with self._connect() as db:
            row = db.execute(
                "SELECT title, head_id, (SELECT COUNT(*) FROM messages WHERE conversation_id = ?"
                " AND role = 'user') AS users FROM conversations WHERE id = ?",
                (conversation_id, conversation_id),
            ).fetchone()
            if row is None:
                raise _gone(conversation_id)
            parent = parent_id if branch else row["head_id"]
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, created_at, model, params,"
                " prompt_tokens, completion_tokens, ttft_s, duration_s, tokens_per_s, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    parent,
                    role,
                    content,
                    stamp,
                    model,
                    json.dumps(dict(params or {})),
                    stats.prompt_tokens if stats else None,
                    stats.completion_tokens if stats else None,
                    stats.ttft_s if stats else None,
                    stats.duration_s if stats else None,
                    stats.tokens_per_s if stats else None,
                    finish_reason or (stats.finish_reason if stats else None),
                ),
            )
            message_id = cursor.lastrowid
            if role == "user" and row["users"] == 0 and row["title"] == NEW_TITLE:
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ?", (title_from(content), conversation_id)
                )
            db.execute(
                "UPDATE conversations SET updated_at = ?, head_id = ?, model = COALESCE(?, model)"
                " WHERE id = ?",
                (stamp, message_id, model, conversation_id),
            )
        assert message_id is not None
        return self.message(message_id)

    def message(self, message_id: int) -> Message:
        with self._connect() as db:
            row = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no message {message_id} (was it deleted?)")
        return _message(row)

    def messages(self, conversation_id: str) -> list[Message]:
        """The branch on show, first message first."""
        conv = self.get(conversation_id)
        with self._connect() as db:
            rows = db.execute(
                "WITH RECURSIVE path(id) AS (SELECT ? UNION ALL"
                " SELECT m.parent_id FROM messages m JOIN path ON m.id = path.id"
                " WHERE m.parent_id IS NOT NULL)"
                " SELECT m.* FROM messages m JOIN path ON m.id = path.id ORDER BY m.id",
                (conv.head_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def branches(self, message: Message) -> Branches:
        """The message and its siblings, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id",
                (message.conversation_id, message.parent_id),
            ).fetchall()
        ids = tuple(int(r["id"]) for r in rows)
        return Branches(ids, ids.index(message.id) if message.id in ids else 0)

    def show_branch(self, conversation_id: str, message_id: int) -> None:
        """Show the branch through ``message_id``, down to its most recent last message."""
        with self._connect() as db:
            row = db.execute(
                "SELECT id FROM messages WHERE id = ? AND conversation_id = ?", (message_id, conversation_id)
            ).fetchone()
            if row is None:
                raise HistoryError(f"no message {message_id} in conversation '{conversation_id}'")
            head = message_id
            while True:
                child = db.execute(
                    "SELECT MAX(id) AS id FROM messages WHERE parent_id = ?", (head,)
                ).fetchone()["id"]
                if child is None:
                    break
                head = int(child)
            db.execute("UPDATE conversations SET head_id = ? WHERE id = ?", (head, conversation_id))

    def rewind(self, conversation_id: str, message_id: int | None) -> None:
        """Show the branch up to ``message_id`` only (None: before the first message).

        The next message added goes below it, next to what followed: the way to regenerate
        a reply or resend an edited question while the old branch stays.
        """
        with self._connect() as db:
            if not db.execute(
                "UPDATE conversations SET head_id = ? WHERE id = ?", (message_id, conversation_id)
            ).rowcount:
                raise _gone(conversation_id)

    def delete_message(self, message_id: int) -> None:
        """Delete a message and everything that followed it in its branch."""
        msg = self.message(message_id)
        with self._connect() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            db.execute(
                "UPDATE conversations SET head_id = ? WHERE id = ? AND (head_id IS NULL OR head_id NOT IN"
                " (SELECT id FROM messages))",
                (msg.parent_id, msg.conversation_id),
            )


_CONVERSATION_SELECT = (
    "SELECT c.id, c.title, c.created_at, c.updated_at, c.model, c.system_prompt, c.params, c.head_id,"
    " COUNT(m.id) AS message_count FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an older database to SCHEMA_VERSION, once, even with several apps starting together."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] < 2:
            for statement in _MIGRATE_2:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _gone(conversation_id: str) -> ConversationGone:
    return ConversationGone(
        f"the conversation '{conversation_id}' was deleted (perhaps in another window):"
        " /new starts a new one, /history lists the others"
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        params=json.loads(row["params"] or "{}"),
        message_count=int(row["message_count"]),
        head_id=row["head_id"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        created_at=row["created_at"],
        model=row["model"],
        params=json.loads(row["params"] or "{}"),
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        ttft_s=row["ttft_s"],
        duration_s=row["duration_s"],
        tokens_per_s=row["tokens_per_s"],
        finish_reason=row["finish_reason"],
        parent_id=row["parent_id"],
    )
