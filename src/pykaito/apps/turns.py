"""One reply being streamed, in the web app: asked for by one run, streamed by the next, saved once.

Streamlit starts a new script run on a new thread for any click while a reply streams, and the
old run goes on until its next Streamlit call. So a turn is claimed by the one run that streams
it (no other run sends the request again), and a later run stops it. Whatever ends it, the
reply is saved as it is: complete, cut at the token limit, stopped (even before its first
token), or lost with the connection, with that reason.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from pykaito.apps.common import CONTINUE_PROMPT
from pykaito.apps.history import HistoryError, HistoryStore, Message, chat_turns
from pykaito.client.chat import ChatParams, ChatReply

CURSOR = "▌"


class ReplyTurn:
    """The reply to the last question of a conversation; ``prefix`` continues a cut-off reply."""

    def __init__(
        self, conv_id: str, model: str | None, system: str, params: ChatParams, prefix: str = ""
    ) -> None:
        self.conv_id, self.model, self.system, self.params = conv_id, model, system, params
        self.prefix = prefix
        self.reply: ChatReply | None = None
        self.text = ""
        self._lock = threading.Lock()
        self._claimed = False
        self._stopped = False
        self._saved = False

    def request(self, messages: Sequence[Message]) -> list[Mapping[str, str]]:
        """What to send: the system prompt, the branch on show, and for a continuation its start."""
        chat: list[Mapping[str, str]] = [{"role": "system", "content": self.system}] if self.system else []
        chat += chat_turns(list(messages))
        if self.prefix:
            chat += [
                {"role": "assistant", "content": self.prefix},
                {"role": "user", "content": CONTINUE_PROMPT},
            ]
        return chat

    def claim(self) -> bool:
        """True for the one run that streams this reply."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    @property
    def claimed(self) -> bool:
        return self._claimed

    def attach(self, reply: ChatReply) -> bool:
        """Keep the opened stream; False (and the stream closed) if the turn was stopped meanwhile."""
        with self._lock:
            if not self._stopped:
                self.reply = reply
                return True
        reply.close()
        return False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            reply = self.reply
        if reply is not None:
            reply.close()

    def finish(self, store: HistoryStore, reason: str | None = None) -> str | None:
        """Save the reply once, with why it ended (``stopped`` when it never started).

        Returns that reason, or None when it was saved already; the text is in ``text``.
        """
        with self._lock:
            if self._saved:
                return None
            self._saved = True
            reply = self.reply
        if reply is not None:
            reply.close()
        stats = reply.stats if reply is not None else None
        final = reason or (stats.finish_reason if stats is not None else None) or "stopped"
        text = self.text = self.prefix + (reply.text if reply is not None else "")
        with contextlib.suppress(HistoryError):  # deleted meanwhile: nothing to save it to
            store.add_message(
                self.conv_id,
                "assistant",
                text,
                model=self.model,
                params=self.params.as_dict(),
                stats=stats,
                finish_reason=final,
            )
        return final


def stop_turn(turn: ReplyTurn, store: HistoryStore) -> None:
    turn.stop()
    turn.finish(store)


def stream_into(reply: ChatReply, prefix: str, show: Callable[[str], object]) -> Iterator[str]:
    """Show the reply as it grows, under a cursor; the final text without it."""
    text = prefix
    for piece in reply:
        text += piece
        show(text + CURSOR)
        yield piece
    show(text)
