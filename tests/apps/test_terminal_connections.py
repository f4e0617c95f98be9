"""The terminal chat saves connections: /connect URL --save NAME, /connections."""

from __future__ import annotations

import io
from pathlib import Path

import pexpect
import pytest

from pykaito.apps.connections import KEYS_FILE, ConnectionStore
from pykaito.apps.history import data_dir
from tests.apps.standin import Behaviour, standin_server
from tests.apps.test_terminal import command, spawn_chat, wait_prompt
from tests.netutil import free_port

KEY = "sk-term-51be0c7d2a"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_connect_save_and_connections(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    down = f"http://127.0.0.1:{free_port()}"
    with (
        standin_server(Behaviour()) as (first_url, _),
        standin_server(Behaviour(api_key=KEY, model="other-model")) as (second_url, second),
    ):
        transcript = io.StringIO()
        child = spawn_chat(first_url)
        child.logfile_read = transcript
        try:
            wait_prompt(child)
            command(child, "/connections", "API KEY")
            command(child, f"/connect {second_url} --save", "--save needs a value")
            command(
                child, f"/connect {second_url} --save 'two words'", "connection name 'two words' is not valid"
            )
            command(child, "/connect host:port --save x", "URL 'host:port' is not valid")
            command(child, f"/connect {down} --save gone", f"cannot reach {down}")
            # the key file's key reaches the server and is stored with the connection
            command(
                child, f"/connect {second_url} --api-key-file {key_file} --save second", "saved as second"
            )
            assert "model = other-model" in transcript.getvalue()
            command(child, f"/connect {first_url} --save second", "'second' exists already")
            child.sendline("hello there")
            child.expect("TTFT")
            wait_prompt(child)
            # with no URL, --save keeps the server in use
            command(child, f"/connect {first_url}", "model = standin-model")
            command(child, "/connect --save here", "saved here")
            child.sendline("/connections")
            child.expect("second")
            child.expect(r"stored \(0600 file\)")
            wait_prompt(child)
            child.sendline("/help")
            child.expect(r"/connect URL --save NAME")
            wait_prompt(child)
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert second.requests[-1]["messages"][-1]["content"] == "hello there"
        sent = [{k.lower(): v for k, v in h.items()} for h in second.headers]
        assert sent and all(h.get("authorization") == f"Bearer {KEY}" for h in sent)
    store = ConnectionStore()
    assert store.names() == ["local", "here", "second"]  # not "gone": it did not answer
    saved = store.get("second")
    assert saved.url == second_url and store.api_key(saved) == KEY
    assert store.get("here").url == first_url and store.api_key(store.get("here")) is None
    shown = transcript.getvalue()
    assert KEY not in shown
    leaks = [
        p
        for p in data_dir().rglob("*")
        if p.is_file() and p.name != KEYS_FILE and KEY.encode() in p.read_bytes()
    ]
    assert leaks == []
