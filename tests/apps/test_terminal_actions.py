"""The terminal chat's message actions and interrupted replies, through a pty against a stand-in server."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from pykaito.apps.history import HistoryStore
from tests.apps.standin import Behaviour, standin_server
from tests.apps.test_terminal import command, spawn_chat, wait_prompt
from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def standin() -> Iterator[tuple[str, Behaviour]]:
    with standin_server(Behaviour()) as served:
        yield served


def finish(child: pexpect.spawn) -> None:
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def only_conversation() -> list[tuple[str, str, str | None]]:
    store = HistoryStore()
    (conv,) = store.list_conversations()
    return [(m.role, m.content, m.finish_reason) for m in store.messages(conv.id)]


def test_retry_edit_continue_keep_branches(standin: tuple[str, Behaviour]) -> None:
    url, behaviour = standin
    behaviour.words = (" one", " two", " three", " four")
    child = spawn_chat(url, "--max-tokens", "2")
    try:
        wait_prompt(child)
        child.sendline("count")
        child.expect("length")  # cut at the token limit, and it says so
        wait_prompt(child)
        command(child, "/continue", "TTFT")
        assert behaviour.requests[-1]["messages"][-2] == {"role": "assistant", "content": " one two"}
        command(child, "/retry", "TTFT")
        command(child, "/edit count again", "TTFT")
        assert behaviour.requests[-1]["messages"][-1] == {"role": "user", "content": "count again"}
        command(child, "/continue", "the last reply is complete|TTFT")
        finish(child)
    finally:
        child.close(force=True)
    assert only_conversation()[0][:2] == ("user", "count again")
    store = HistoryStore()
    (conv,) = store.list_conversations()
    # every version is kept: 2 questions and 4 replies (cut, continued, retried, after the edit)...
    assert conv.message_count >= 6
    question = store.messages(conv.id)[0]
    assert store.branches(question).count == 2  # the edit is a branch next to the first question


def test_copy_uses_the_clipboard_program(standin: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, _ = standin
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    clip = bin_dir / "xclip"
    clip.write_text(f"#!/bin/sh\ncat > {tmp_path / 'clipboard'}\n")
    clip.chmod(clip.stat().st_mode | stat.S_IEXEC)
    os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    try:
        child = spawn_chat(url)
        wait_prompt(child)
        command(child, "/copy", "no reply to copy yet")
        command(child, "hello", "TTFT")
        command(child, "/copy", "copied the last reply")
        finish(child)
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(":", 1)[1]
    assert (tmp_path / "clipboard").read_text() == "Hello from the stand-in."


def test_a_reply_cut_by_the_server_is_kept_with_its_reason() -> None:
    cut = Behaviour(words=tuple(f" w{i}" for i in range(20)), cut_after=5)
    with standin_server(cut) as (url, _):
        child = spawn_chat(url)
        try:
            wait_prompt(child)
            child.sendline("talk")
            child.expect(r"\[interrupted: the connection to the server was lost\]")
            wait_prompt(child)
            command(child, "/stats", "replies: 1")
            finish(child)
        finally:
            child.close(force=True)
    assert only_conversation() == [("user", "talk", None), ("assistant", " w0 w1 w2 w3 w4", "error")]


def test_a_conversation_deleted_elsewhere_is_one_clear_line(standin: tuple[str, Behaviour]) -> None:
    url, _ = standin
    child = spawn_chat(url)
    try:
        wait_prompt(child)
        command(child, "first", "TTFT")
        store = HistoryStore()
        (conv,) = store.list_conversations()
        store.delete(conv.id)  # as the web app does
        child.sendline("second")
        child.expect("was deleted")
        wait_prompt(child)
        command(child, "third", "TTFT")  # a new conversation starts
        finish(child)
    finally:
        child.close(force=True)
    assert "Traceback" not in (child.before or "")
    assert [m[1] for m in only_conversation()] == ["third", "Hello from the stand-in."]


def test_history_opens_with_the_server_down() -> None:
    store = HistoryStore()
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "an old question about tensors")
    store.add_message(conv.id, "assistant", "an old answer")
    child = spawn_chat(f"http://127.0.0.1:{free_port()}")
    try:
        child.expect("cannot reach")
        child.expect("The history is open")
        wait_prompt(child)
        command(child, "/history tensors", "an old question")
        command(child, f"/load {conv.id[:6]}", "an old answer")
        child.sendline("new question")
        child.expect("cannot reach")
        wait_prompt(child)
        finish(child)
    finally:
        child.close(force=True)


def test_ctrl_c_at_the_prompt_hints_once(standin: tuple[str, Behaviour]) -> None:
    url, _ = standin
    child = spawn_chat(url)
    transcript = io.StringIO()
    child.logfile_read = transcript
    try:
        wait_prompt(child)
        child.sendintr()
        child.expect(r"\(Ctrl-D or /exit leaves\)")
        wait_prompt(child)
        child.sendintr()
        wait_prompt(child)
        command(child, "/stats", "replies: 0")
        finish(child)
    finally:
        child.close(force=True)
    assert transcript.getvalue().count("Ctrl-D or /exit leaves") == 1


def test_pipe_mode_saves_nothing_unless_asked(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    with standin_server(Behaviour(api_key="s3cret")) as (url, behaviour):
        base = [
            sys.executable,
            "-m",
            "pykaito.cli.main",
            "chat",
            "--endpoint",
            url,
            "--api-key-file",
            str(key),
        ]
        first = subprocess.run(base, input="hi", capture_output=True, text=True, timeout=60, check=False)
        assert first.returncode == 0, first.stderr
        assert first.stdout == "Hello from the stand-in.\n"
        assert HistoryStore().list_conversations() == []
        saved = subprocess.run(
            [*base, "--save"], input="hi", capture_output=True, text=True, timeout=60, check=False
        )
        assert saved.returncode == 0, saved.stderr
        assert [m[1] for m in only_conversation()] == ["hi", "Hello from the stand-in."]
        sent = [{k.lower(): v for k, v in h.items()} for h in behaviour.headers]
        assert sent and all(h.get("authorization") == "Bearer s3cret" for h in sent)
    # the key is nowhere in the history database
    assert b"s3cret" not in Path(HistoryStore().path).read_bytes()
    missing = subprocess.run(
        [*base[:-1], str(tmp_path / "nope")],
        input="hi",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "--api-key-file" in missing.stderr and "Traceback" not in missing.stderr


def test_demo_model_notice_and_pdf_export(tmp_path: Path) -> None:
    with standin_server(Behaviour(model="smollm2-135m-instruct")) as (url, _):
        child = spawn_chat(url)
        try:
            child.expect("small demo model")
            wait_prompt(child)
            command(child, "hello", "TTFT")
            out = tmp_path / "chat.pdf"
            command(child, f"/export pdf {out}", "exported to")
            finish(child)
        finally:
            child.close(force=True)
    assert out.read_bytes().startswith(b"%PDF-")
