"""Conversation history in SQLite, shared by the terminal chat and the web app.

One database file, ``history.db``, in the data directory (``$KAITO_HOME`` or the platform's
user data directory). WAL mode, and every message is committed as soon as it is complete, so
a crash loses at most the reply that was being generated.

    conversations  id, title, created_at, updated_at, model, system_prompt, params (JSON)
    messages       id, conversation_id → conversations, role, content, created_at, model,
                   params (JSON), prompt_tokens, completion_tokens, ttft_s, duration_s,
                   tokens_per_s, finish_reason
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_data_dir

from pykaito.errors import InputError, PykaitoError

if TYPE_CHECKING:
    from pykaito.client.chat import ReplyStats

HOME_ENV = "KAITO_HOME"
DB_NAME = "history.db"
TITLE_LENGTH = 60

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


class HistoryError(PykaitoError):
    """A conversation cannot be found or the history database cannot be used."""


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


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


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

    def as_chat(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    snippet: str


class HistoryStore:
    """The conversation store; one short-lived connection per call, safe across threads."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            self.path = path or data_dir() / DB_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            where = path or f"in {os.environ.get(HOME_ENV) or user_data_dir('pykaito')}"
            raise HistoryError(
                f"cannot open the history database {where}: {exc} — set {HOME_ENV} to a writable directory"
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    # conversations

    def create_conversation(
        self,
        title: str = "New chat",
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
            raise HistoryError(
                f"no conversation '{conversation_id}': list them with /history or `kaito chat` → /history"
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

    def update_settings(
        self,
        conversation_id: str,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE conversations SET model = COALESCE(?, model), system_prompt = ?,"
                " params = COALESCE(?, params) WHERE id = ?",
                (
                    model,
                    system_prompt,
                    None if params is None else json.dumps(dict(params)),
                    conversation_id,
                ),
            )

    def delete(self, conversation_id: str) -> None:
        conv = self.get(conversation_id)
        with self._connect() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conv.id,))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Conversations whose title or any message contains ``query`` (case-insensitive)."""
        needle = query.strip()
        if not needle:
            return []
        pattern = f"%{_escape_like(needle)}%"
        with self._connect() as db:
            rows = db.execute(
                "SELECT c.id AS id, "
                " (SELECT m.content FROM messages m WHERE m.conversation_id = c.id"
                "   AND m.content LIKE ? ESCAPE '\\' ORDER BY m.id LIMIT 1) AS hit"
                " FROM conversations c"
                " WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
                "   WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\')"
                " ORDER BY c.updated_at DESC LIMIT ?",
                (pattern, pattern, pattern, limit),
            ).fetchall()
        hits = []
        for row in rows:
            conv = self.get(row["id"])
            hits.append(SearchHit(conv, _snippet(row["hit"] or conv.title, needle)))
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
    ) -> Message:
        """Append one complete message and commit it."""
        stamp = now_iso()
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, model, params,"
                " prompt_tokens, completion_tokens, ttft_s, duration_s, tokens_per_s, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
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
                    stats.finish_reason if stats else None,
                ),
            )
            row = db.execute(
                "SELECT title, (SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND role = 'user')"
                " AS users FROM conversations WHERE id = ?",
                (conversation_id, conversation_id),
            ).fetchone()
            if row is None:
                raise HistoryError(f"no conversation '{conversation_id}' to add a message to")
            if role == "user" and row["users"] == 1 and row["title"] == "New chat":
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ?", (title_from(content), conversation_id)
                )
            db.execute(
                "UPDATE conversations SET updated_at = ?, model = COALESCE(?, model) WHERE id = ?",
                (stamp, model, conversation_id),
            )
            message_id = cursor.lastrowid
        assert message_id is not None
        return self.message(message_id)

    def message(self, message_id: int) -> Message:
        with self._connect() as db:
            row = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no message {message_id}")
        return _message(row)

    def messages(self, conversation_id: str) -> list[Message]:
        conv = self.get(conversation_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conv.id,)
            ).fetchall()
        return [_message(r) for r in rows]

    # export

    def export_json(self, conversation_id: str) -> str:
        conv = self.get(conversation_id)
        document = {
            "conversation": asdict(conv),
            "messages": [asdict(m) for m in self.messages(conv.id)],
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    def export_markdown(self, conversation_id: str) -> str:
        conv = self.get(conversation_id)
        lines = [f"# {conv.title}", ""]
        meta = [f"- Conversation: `{conv.id}`", f"- Started: {short_time(conv.created_at)}"]
        if conv.model:
            meta.append(f"- Model: `{conv.model}`")
        if conv.params:
            settings = ", ".join(f"{k}={v}" for k, v in sorted(conv.params.items()))
            meta.append(f"- Settings: {settings}")
        lines += [*meta, ""]
        if conv.system_prompt:
            lines += ["## System", "", conv.system_prompt, ""]
        for msg in self.messages(conv.id):
            if msg.role == "system":
                lines += ["## System", "", msg.content, ""]
                continue
            heading = "You" if msg.role == "user" else "Assistant"
            lines += [f"## {heading} · {short_time(msg.created_at)}", "", msg.content, ""]
            if msg.role == "assistant" and msg.completion_tokens is not None:
                lines += [f"*{_stats_line(msg)}*", ""]
        return "\n".join(lines).rstrip() + "\n"


_CONVERSATION_SELECT = (
    "SELECT c.id, c.title, c.created_at, c.updated_at, c.model, c.system_prompt, c.params,"
    " COUNT(m.id) AS message_count FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _snippet(text: str, needle: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    at = flat.lower().find(needle.lower())
    if at < 0 or len(flat) <= width:
        return flat[:width]
    start = max(0, at - width // 3)
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


def _stats_line(msg: Message) -> str:
    parts = [f"{msg.completion_tokens} tokens"]
    if msg.ttft_s is not None:
        parts.append(f"TTFT {msg.ttft_s * 1000:.0f} ms")
    if msg.tokens_per_s is not None:
        parts.append(f"{msg.tokens_per_s:.1f} tokens/s")
    if msg.finish_reason and msg.finish_reason != "stop":
        parts.append(msg.finish_reason)
    return " · ".join(parts)


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
    )
