"""The terminal chat's slash commands, over a stand-in server (the pty tests use the real runtime)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pykaito.apps.history import HistoryStore
from pykaito.apps.terminal import ChatSettings, TerminalChat, piped
from pykaito.client.chat import ChatClient, ChatParams
from pykaito.errors import InputError
from tests.apps.standin import Behaviour, standin_server


class Session:
    def __init__(self, chat: TerminalChat, out: io.StringIO, behaviour: Behaviour) -> None:
        self.chat, self._out, self.behaviour = chat, out, behaviour

    def run(self, line: str) -> str:
        start = self._out.tell()
        if line.startswith("/"):
            self.chat.command(line)
        else:
            self.chat.send(line)
        self._out.seek(start)
        text = self._out.read()
        self._out.seek(0, io.SEEK_END)
        return text


@pytest.fixture
def session() -> Iterator[Session]:
    with standin_server(Behaviour()) as (url, behaviour), ChatClient(url) as client:
        out = io.StringIO()
        console = Console(file=out, width=120, color_system=None, highlight=False)
        chat = TerminalChat(client, HistoryStore(), ChatSettings(params=ChatParams(max_tokens=8)), console)
        yield Session(chat, out, behaviour)


def test_reply_then_stats(session: Session) -> None:
    text = session.run("hello")
    assert "assistant" in text and "Hello from the stand-in." in text
    assert "11 → 5 tokens · TTFT" in text and "tokens/s" in text
    stats = session.run("/stats")
    assert "replies: 1" in stats
    assert "tokens: 11 prompt + 5 completion" in stats
    assert "model standin-model · temperature 0.7 · max-tokens 8 · top-p 1.0" in stats


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("/temperature 1.5", "temperature = 1.5", id="temperature"),
        pytest.param("/temperature hot", "temperature must be a number, not 'hot'", id="temperature-nan"),
        pytest.param("/max-tokens 0", "max-tokens must be between 1 and 1000000", id="max-tokens-low"),
        pytest.param("/top-p 0.5", "top-p = 0.5", id="top-p"),
        pytest.param("/model", "standin-model", id="model-list"),
        pytest.param(
            "/model gpt-9", "the server has no model 'gpt-9': it serves standin-model", id="model-bad"
        ),
        pytest.param("/frobnicate", "unknown command /frobnicate: /help lists them", id="unknown"),
        pytest.param("/load", "/load needs a conversation id", id="load-no-id"),
        pytest.param("/load zzz", "no conversation 'zzz'", id="load-unknown"),
        pytest.param("/export", "nothing to export yet: send a message first", id="export-empty"),
        pytest.param("/history", "no conversations yet", id="history-empty"),
        pytest.param("/help", "/max-tokens", id="help"),
    ],
)
def test_command_answers(session: Session, line: str, expected: str) -> None:
    assert expected in session.run(line)


def test_settings_reach_the_server(session: Session) -> None:
    session.run("/system Answer in French.")
    session.run("/temperature 0.1")
    session.run("/max-tokens 3")
    session.run("/top-p 0.8")
    assert session.run("/system") == "system prompt: Answer in French.\n"
    session.run("bonjour")
    sent = session.behaviour.requests[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"]) == (0.1, 3, 0.8)
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    session.run("/system none")
    session.run("again")
    assert session.behaviour.requests[-1]["messages"][0]["role"] == "user"


def test_new_history_load_save_and_export(session: Session, tmp_path: Path) -> None:
    session.run("about kubernetes")
    first = session.chat.conversation
    assert first is not None
    assert "saved as 'K8s notes'" in session.run("/save K8s notes")
    session.run("/new")
    session.run("about pasta")
    listing = session.run("/history")
    assert "K8s notes" in listing and "about pasta" in listing
    assert "pasta" not in session.run("/history kubernetes").replace("about kubernetes", "")
    session.run("/temperature 1.9")
    loaded = session.run(f"/load {first.id[:5]}")
    assert "resumed 'K8s notes' (2 messages)" in loaded
    assert session.chat.settings.params.temperature == 0.7  # the conversation's own setting
    session.run("more please")
    sent = session.behaviour.requests[-1]["messages"]
    assert [m["content"] for m in sent] == ["about kubernetes", "Hello from the stand-in.", "more please"]
    target = tmp_path / "k8s.json"
    assert f"exported to {target}" in session.run(f"/export json {target}")
    document = json.loads(target.read_text())
    assert document["conversation"]["title"] == "K8s notes"
    assert len(document["messages"]) == 4


def test_export_defaults_to_markdown_in_the_working_directory(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    session.run("hi")
    assert session.chat.conversation is not None
    out = session.run("/export")
    path = tmp_path / f"conversation-{session.chat.conversation.id}.md"
    assert f"exported to {path.name}" in out
    assert path.read_text().startswith("# hi\n")


def test_exit(session: Session) -> None:
    session.run("/exit")
    assert not session.chat.running


def test_piped_empty_input_is_refused(session: Session) -> None:
    with pytest.raises(InputError, match="nothing to send"):
        piped(session.chat, io.StringIO("  \n"), io.StringIO())


def test_guide_example_cli_in_a_pipe() -> None:
    example = Path(__file__).parents[2] / "examples" / "phi4_chat_cli.py"
    with standin_server(Behaviour()) as (url, _):
        result = subprocess.run(
            [sys.executable, str(example), "--endpoint", url, "--max-tokens", "2"],
            input="hi",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from\n"
