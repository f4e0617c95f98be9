"""The terminal chat driven through a pseudo-terminal.

Conversations run against the real runtime; Ctrl-C and kill -9 in the middle of a reply use a
stand-in server whose reply is slow and long for certain, so the cut always lands mid-reply.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from pykaito.apps.export import to_json
from pykaito.apps.history import HistoryStore
from tests.apps.standin import Behaviour, standin_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def spawn_chat(endpoint: str, *args: str) -> pexpect.spawn:
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "COLUMNS": "120",
        "LINES": "40",
    }
    command = ["-m", "pykaito.cli.main", "chat", "--endpoint", endpoint, *args]
    return pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=90, dimensions=(40, 120))


PROMPT = r"you(\x1b\[0m)? ›"


def wait_prompt(child: pexpect.spawn) -> None:
    child.expect(PROMPT)


def ask(child: pexpect.spawn, text: str) -> None:
    child.sendline(text)
    child.expect("TTFT")  # the stats line under a finished reply
    wait_prompt(child)


def command(child: pexpect.spawn, text: str, answer: str) -> None:
    child.sendline(text)
    child.expect(answer)
    wait_prompt(child)


def test_two_turns_system_temperature_export(runtime_url: str, tmp_path: Path) -> None:
    child = spawn_chat(runtime_url, "--max-tokens", "16", "--temperature", "0")
    try:
        child.expect("pykaito chat")
        child.expect("/help for commands")
        wait_prompt(child)
        ask(child, "Hello! What is the capital of France?")
        ask(child, "And of Italy?")

        command(child, "/system You are a pirate.", "system prompt set")
        command(child, "/temperature 0.5", "temperature = 0.5")
        command(child, "/temperature 7", "temperature must be between 0 and 2")
        ask(child, "Tell me about the sea.")

        out = tmp_path / "chat.md"
        command(child, f"/export md {out}", "exported to")
        command(child, "/stats", "replies: 3")

        command(child, "/help", "/export")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    store = HistoryStore()
    (conv,) = store.list_conversations()
    messages = store.messages(conv.id)
    assert [m.role for m in messages] == ["user", "assistant"] * 3
    first, second, third = (m for m in messages if m.role == "assistant")
    for reply in (first, second, third):
        assert reply.content.strip()
        assert reply.completion_tokens is not None and 0 < reply.completion_tokens <= 16
        assert reply.ttft_s is not None and reply.ttft_s > 0
    # the second question was sent with the first turn, the third with the system prompt too
    assert second.prompt_tokens is not None and first.prompt_tokens is not None
    assert second.prompt_tokens > first.prompt_tokens
    assert third.params == {"temperature": 0.5, "max_tokens": 16, "top_p": 1.0}
    assert conv.system_prompt == "You are a pirate."
    assert first.params is not None and first.params["temperature"] == 0.0

    text = out.read_text()
    assert text.startswith("# Hello!\n")  # a short title: the first sentence
    assert "## System\n\nYou are a pirate." in text
    assert text.count("## You · ") == 3 and text.count("## Assistant · ") == 3
    assert first.content.strip() in text


def test_multi_line_entry(runtime_url: str) -> None:
    child = spawn_chat(runtime_url, "--max-tokens", "16")
    try:
        wait_prompt(child)
        child.send("first line\\")
        child.send("\r")
        child.send("second line")
        child.send("\x1b\r")  # Esc Enter: another new line
        child.send("third line\r")
        child.expect("TTFT")
        wait_prompt(child)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    (conv,) = HistoryStore().list_conversations()
    assert HistoryStore().messages(conv.id)[0].content == "first line\nsecond line\nthird line"


def test_pipe_mode_prints_one_reply_saved_with_save(runtime_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pykaito.cli.main",
            "chat",
            "--endpoint",
            runtime_url,
            "--max-tokens",
            "20",
            "--save",
        ],
        input="Say hi.\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout  # plain text in a pipe
    (conv,) = HistoryStore().list_conversations()
    user, assistant = HistoryStore().messages(conv.id)
    assert user.content == "Say hi."
    assert result.stdout == assistant.content + "\n"
    assert assistant.completion_tokens is not None and 0 < assistant.completion_tokens <= 20


def test_pipe_mode_with_server_down_is_one_line(tmp_path: Path) -> None:
    from tests.netutil import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "pykaito.cli.main", "chat", "--endpoint", url],
        input="hi",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: cannot reach {url}: is `kaito connect` or `kaito up` running?"


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A stand-in that streams 3000 words, 20 ms apart: a reply that is surely cut mid-way.

    A minute of words, so the reply is still streaming when Ctrl-C comes even if a busy machine
    keeps the test from reading the first words for several seconds.
    """
    words = tuple(f" word{i}" for i in range(3000))
    with standin_server(Behaviour(words=words, delay_s=0.02)) as (url, _):
        yield url


def stop_a_long_reply(child: pexpect.spawn) -> None:
    """Ask the stand-in for its long reply and stop it with Ctrl-C once it is streaming."""
    wait_prompt(child)
    child.sendline("talk for a long time")
    child.expect("word5")
    child.sendintr()
    child.expect(r"\[stopped\]")
    wait_prompt(child)


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(slow_server: str) -> None:
    child = spawn_chat(slow_server)
    try:
        stop_a_long_reply(child)
        command(child, "/stats", r"tokens: 11 prompt \+ \d+ completion")  # the stopped reply's prompt
        command(child, "/max-tokens 3", "max-tokens = 3")
        ask(child, "and now briefly")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    (conv,) = HistoryStore().list_conversations()
    user, stopped, user2, short = HistoryStore().messages(conv.id)
    assert user.content == "talk for a long time"
    assert stopped.finish_reason == "stopped"
    assert stopped.content.startswith(" word0 word1 word2 word3 word4 word5")
    assert stopped.completion_tokens is not None and 6 <= stopped.completion_tokens < 3000
    assert (user2.content, short.content, short.finish_reason) == (
        "and now briefly",
        " word0 word1 word2",
        "length",
    )


def test_history_survives_kill_9_mid_reply(slow_server: str) -> None:
    child = spawn_chat(slow_server, "--max-tokens", "3")
    try:
        wait_prompt(child)
        ask(child, "Name a colour.")
        command(child, "/max-tokens 400", "max-tokens = 400")
        child.sendline("Talk for a long time.")
        child.expect("word5")
        os.kill(child.pid, signal.SIGKILL)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.signalstatus == signal.SIGKILL

    store = HistoryStore()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (conv,) = store.list_conversations()
    messages = store.messages(conv.id)
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert [m.content for m in messages] == ["Name a colour.", " word0 word1 word2", "Talk for a long time."]
    assert messages[1].completion_tokens == 3

    # a restart resumes it, earlier turns intact
    again = spawn_chat(slow_server, "--max-tokens", "2", "--resume", conv.id[:6])
    try:
        again.expect("resumed")
        again.expect("Name a colour")
        again.expect(r"\[no reply: the chat ended before it came\]")
        wait_prompt(again)
        ask(again, "Another one?")
        again.sendline("/exit")
        again.expect(pexpect.EOF)
    finally:
        again.close(force=True)
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant", "user", "user", "assistant"]
    exported = json.loads(to_json(store, conv.id))
    assert exported["messages"][1]["content"] == " word0 word1 word2"


def test_ctrl_c_works_when_the_chat_was_started_with_sigint_ignored(slow_server: str) -> None:
    """A shell without job control starts background programs with SIGINT ignored; the chat restores it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the spawned chat inherits the ignored SIGINT
    try:
        child = spawn_chat(slow_server)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        stop_a_long_reply(child)
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
