"""Saved connections: the library, `kaito connections`, `chat --connection`, /connect and the web app."""

from __future__ import annotations

import io
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pexpect
import pytest
from streamlit.testing.v1 import AppTest

from pykaito.apps.connections import KEYS_FILE, Connection, ConnectionStore
from pykaito.apps.history import HistoryStore, data_dir
from pykaito.errors import InputError
from tests.apps.standin import Behaviour, standin_server
from tests.apps.test_terminal import command, spawn_chat, wait_prompt
from tests.netutil import free_port

KEY = "sk-test-7f3a9c1e55"
WEBAPP = str(resources.files("pykaito.apps") / "webapp.py")


def kaito(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pykaito.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def files_without_key_store() -> dict[Path, bytes]:
    """Every file of the data directory (history DB, its WAL, logs) except the 0600 key file."""
    return {p: p.read_bytes() for p in data_dir().rglob("*") if p.is_file() and p.name != KEYS_FILE}


# the library


def test_stored_key_is_private_and_apart(tmp_path: Path) -> None:
    store = ConnectionStore(tmp_path)
    store.add(Connection("prod", "example.test:8000/v1/"), KEY)
    keys = tmp_path / KEYS_FILE
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert KEY in keys.read_text()
    assert KEY not in store.path.read_text()  # the list holds no secret
    conn = store.get("prod")
    assert conn.url == "http://example.test:8000"
    assert conn.stored_key and conn.key_source() == "stored (0600 file)"
    assert KEY not in repr(conn) and KEY not in conn.describe()
    assert store.api_key(conn) == KEY
    assert store.names() == ["local", "prod"]
    store.remove("prod")
    assert KEY not in keys.read_text()
    assert store.names() == ["local"]


def test_key_references_are_read_at_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ConnectionStore(tmp_path)
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{KEY}\n")
    store.add(Connection("byfile", "http://h:1", key_file=str(key_file)))
    store.add(Connection("byenv", "http://h:2", key_env="MY_TEST_KEY"))
    assert not (tmp_path / KEYS_FILE).exists()  # nothing stored for references
    assert store.api_key(store.get("byfile")) == KEY
    with pytest.raises(InputError, match=r"\$MY_TEST_KEY, which is not set"):
        store.api_key(store.get("byenv"))
    monkeypatch.setenv("MY_TEST_KEY", KEY)
    assert store.api_key(store.get("byenv")) == KEY
    assert store.get("byenv").key_source() == "$MY_TEST_KEY"
    key_file.write_text("")
    with pytest.raises(InputError, match="is empty"):
        store.api_key(store.get("byfile"))


def test_workspace_entry_and_local_default(tmp_path: Path) -> None:
    store = ConnectionStore(tmp_path)
    assert store.get("local").kind == "local"
    store.add(Connection("phi", "http://localhost:8081", "workspace", "phi-4", "team"))
    phi = store.get("phi")
    assert (phi.workspace, phi.namespace, phi.url) == ("phi-4", "team", "http://localhost:8081")
    assert "kaito connect phi-4" in phi.describe()


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    store = ConnectionStore(tmp_path)
    with pytest.raises(InputError, match="not valid"):
        store.add(Connection("no spaces", "http://h:1"))
    store.add(Connection("a", "http://h:1"))
    with pytest.raises(InputError, match=r"exists already.*--replace"):
        store.add(Connection("a", "http://h:2"))
    store.add(Connection("a", "http://h:2"), replace=True)
    assert store.get("a").url == "http://h:2"
    with pytest.raises(InputError, match="no saved connection 'b': saved are local, a"):
        store.get("b")
    with pytest.raises(InputError, match="one way"):
        store.add(Connection("c", "http://h:1", key_env="X"), KEY)
    store.path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        store.all()


# the command line


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_and_chat_connection_keep_the_key_out(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with standin_server(Behaviour(api_key=KEY)) as (url, behaviour):
        added = kaito("connections", "add", "stand", url, "--api-key-file", str(key_file))
        assert added.returncode == 0, added.stderr
        listed = kaito("connections", "list")
        assert "stand" in listed.stdout and "stored (0600 file)" in listed.stdout
        key_file.unlink()  # the key was stored: the file is no longer needed
        chat = kaito("chat", "--connection", "stand", "--save", stdin="hi")
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout == "Hello from the stand-in.\n"
        sent = [{k.lower(): v for k, v in h.items()} for h in behaviour.headers]
        assert sent and all(h.get("authorization") == f"Bearer {KEY}" for h in sent)
        outputs = [added, listed, chat]
    (conv,) = HistoryStore().list_conversations()
    assert conv.message_count == 2
    assert all(KEY not in p.stdout + p.stderr for p in outputs)
    leaks = [p for p, data in files_without_key_store().items() if KEY.encode() in data]
    assert leaks == []
    assert Path(HistoryStore().path).exists()
    missing = kaito("chat", "--connection", "nope", stdin="hi")
    assert missing.returncode != 0
    assert "no saved connection 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    removed = kaito("connections", "rm", "stand")
    assert removed.returncode == 0 and "removed connection stand" in removed.stdout
    assert KEY not in (data_dir() / KEYS_FILE).read_text()


# the terminal


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_terminal_connect_switches_server_and_model() -> None:
    with (
        standin_server(Behaviour()) as (first_url, first),
        standin_server(Behaviour(api_key=KEY, model="other-model")) as (second_url, second),
    ):
        store = ConnectionStore()
        store.add(Connection("second", second_url), KEY)
        transcript = io.StringIO()
        child = spawn_chat(first_url)
        child.logfile_read = transcript
        try:
            wait_prompt(child)
            command(child, "/connect", "second")
            command(child, "/connect nope", "no saved connection 'nope'")
            command(child, "/connect second", "model = other-model")
            child.sendline("hello there")
            child.expect("TTFT")
            wait_prompt(child)
            command(child, "/model", "other-model")
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert not first.requests  # nothing was sent before the switch
        assert second.requests[-1]["model"] == "other-model"
        sent = [{k.lower(): v for k, v in h.items()} for h in second.headers]
        assert sent and all(h.get("authorization") == f"Bearer {KEY}" for h in sent)
    assert KEY not in transcript.getvalue()
    (conv,) = HistoryStore().list_conversations()
    assert conv.model == "other-model"
    leaks = [p for p, data in files_without_key_store().items() if KEY.encode() in data]
    assert leaks == []


# the web app


def test_webapp_picks_a_saved_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with standin_server(Behaviour(api_key=KEY, model="other-model")) as (url, behaviour):
        ConnectionStore().add(Connection("second", url), KEY)
        at = AppTest.from_file(WEBAPP, default_timeout=30)
        at.run()
        assert not at.exception
        picker = next(s for s in at.selectbox if s.label == "Connection")
        assert picker.options == ["local", "second", "Custom URL"]
        picker.set_value("second").run()
        assert not at.exception
        assert next(t for t in at.text_input if t.label == "Endpoint").value == url
        model = next(s for s in at.selectbox if s.label == "Model")
        assert model.options == ["other-model"]
        assert any("(second)" in c.value for c in at.sidebar.caption)
        at.chat_input[0].set_value("hi").run()
        assert not at.exception
        assert behaviour.requests[-1]["messages"][-1] == {"role": "user", "content": "hi"}
        sent = [{k.lower(): v for k, v in h.items()} for h in behaviour.headers]
        assert sent and all(h.get("authorization") == f"Bearer {KEY}" for h in sent)
        # typing a URL by hand drops the saved key
        next(t for t in at.text_input if t.label == "Endpoint").set_value(url + "/").run()
        assert next(s for s in at.selectbox if s.label == "Connection").value == "Custom URL"
    assert all(KEY not in str(e.value) for e in at.markdown)
    leaks = [p for p, data in files_without_key_store().items() if KEY.encode() in data]
    assert leaks == []


def test_webapp_opens_with_the_connection_kaito_ui_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with standin_server(Behaviour(api_key=KEY, model="other-model")) as (url, behaviour):
        ConnectionStore().add(Connection("second", url), KEY)
        monkeypatch.setenv("KAITO_CONNECTION", "second")  # what `kaito ui --connection second` sets
        at = AppTest.from_file(WEBAPP, default_timeout=30)
        at.run()
        assert not at.exception
        assert next(s for s in at.selectbox if s.label == "Connection").value == "second"
        assert next(s for s in at.selectbox if s.label == "Model").options == ["other-model"]
        at.chat_input[0].set_value("hi").run()
        assert behaviour.requests[-1]["model"] == "other-model"
    missing = kaito("ui", "--connection", "nope")
    assert missing.returncode != 0 and "no saved connection 'nope'" in missing.stderr
