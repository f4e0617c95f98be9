"""Conversation titles written by the model, after the first exchange, in the background.

The history names a new conversation after the first sentence of its first question at once;
once the first reply is in, one short request (not streamed, a few tokens) asks the model for
a better title. It runs on its own thread with its own client and a timeout, so the chat never
waits for it; on any error, timeout or unusable answer the first-sentence title stays. A title
the user gave meanwhile is never overwritten. ``KAITO_TITLES=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from pykaito.apps.history import TITLE_LENGTH, HistoryError, HistoryStore, title_from
from pykaito.client.chat import ChatClient, ChatError, ChatParams

log = logging.getLogger(__name__)

TITLES_ENV = "KAITO_TITLES"
TITLE_MAX_TOKENS = 16
TITLE_TIMEOUT_S = 30.0
TITLE_PROMPT = (
    "Write a short title (3 to 6 words) for the conversation below. "
    "Answer with the title only: no quotes, no punctuation at the end."
)
EXCERPT = 600  # characters of the question and of the answer sent along

_LABEL = re.compile(r"^\s*(title|conversation title|subject)\s*[:\-–]\s*", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>\[\]]+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029]")


def titles_enabled() -> bool:
    return os.environ.get(TITLES_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def clean_title(text: str) -> str | None:
    """One line of at most ``TITLE_LENGTH`` characters (cut at a word), or None if nothing usable."""
    parts = _ANSI.sub("", text).splitlines()
    lines = [line for line in (_CONTROL.sub(" ", part) for part in parts) if line.strip()]
    if not lines:
        return None
    line = _LABEL.sub("", lines[0])
    line = _MARKUP.sub("", line)
    line = " ".join(line.split()).strip(" \"'“”‘’«».,;:!-–—")
    if sum(ch.isalnum() for ch in line) < 2:
        return None
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[: TITLE_LENGTH - 1]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-–—") + "…"


def ask_title(client: ChatClient, question: str, answer: str, model: str | None) -> str | None:
    """The model's title for this exchange, cleaned; None on any failure (never raises ChatError)."""
    exchange = f"User: {question[:EXCERPT]}\n\nAssistant: {answer[:EXCERPT]}"
    messages = [{"role": "system", "content": TITLE_PROMPT}, {"role": "user", "content": exchange}]
    try:
        text = client.complete(
            messages, ChatParams(temperature=0.0, max_tokens=TITLE_MAX_TOKENS), model=model
        )
    except ChatError as exc:
        log.info("no generated title (%s): the first sentence stays", exc)
        return None
    return clean_title(text)


class TitleJob:
    """One title request on a daemon thread; ``done`` once it has ended, ``title`` if one was set."""

    def __init__(
        self,
        store: HistoryStore,
        conv_id: str,
        endpoint: str,
        api_key: str | None,
        model: str | None,
        question: str,
        answer: str,
        timeout_s: float = TITLE_TIMEOUT_S,
    ) -> None:
        self.conv_id = conv_id
        self.title: str | None = None
        self.deadline = time.monotonic() + timeout_s + 5.0
        self._args = (store, endpoint, api_key, model, question, answer, timeout_s)
        self._thread = threading.Thread(target=self._run, name=f"title-{conv_id}", daemon=True)

    def start(self) -> TitleJob:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() or time.monotonic() > self.deadline

    def wait(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        store, endpoint, api_key, model, question, answer, timeout_s = self._args
        try:
            with ChatClient(endpoint, api_key=api_key, timeout_s=timeout_s, retries=0) as client:
                title = ask_title(client, question, answer, model)
            if title and store.retitle(self.conv_id, title_from(question), title):
                self.title = title
        except (HistoryError, OSError) as exc:  # the conversation went away, the disk failed
            log.info("no generated title: %s", exc)
        except Exception:  # a title is never worth a crash
            log.exception("generating a title failed")


def first_exchange_title(
    store: HistoryStore,
    conv_id: str,
    endpoint: str,
    api_key: str | None,
    model: str | None,
    turns: list[tuple[str, str]],
    finish_reason: str | None,
) -> TitleJob | None:
    """Start a title job when ``turns`` (role, text) is one complete first exchange; else None."""
    if not titles_enabled() or finish_reason not in ("stop", "length"):
        return None
    if [role for role, _ in turns] != ["user", "assistant"] or not turns[1][1].strip():
        return None
    return TitleJob(store, conv_id, endpoint, api_key, model, turns[0][1], turns[1][1]).start()
