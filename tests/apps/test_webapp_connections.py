"""The web app's Connections panel: add, edit (a new key or URL) and remove saved connections."""

from __future__ import annotations

from importlib import resources

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import TextInput

from pykaito.apps.connections import KEYS_FILE, Connection, ConnectionStore
from pykaito.apps.history import data_dir
from tests.apps.standin import Behaviour, standin_server
from tests.netutil import free_port

KEY = "sk-web-4d2b8e91f0aa"
NEW_KEY = "sk-web-rotated-77c3e1d9"
WEBAPP = str(resources.files("pykaito.apps") / "webapp.py")


def page_text(at: AppTest) -> str:
    """Everything the page shows as text (markdown, captions, alerts, widget values).

    Not the password field itself: while a form is being fixed it keeps what was typed, masked.
    """
    parts = [
        str(e.value) for group in (at.markdown, at.caption, at.error, at.success, at.warning) for e in group
    ]
    parts += [str(w.value) for w in at.text_input if not str(w.key).startswith("conn-key-")]
    parts += [str(w.value) for w in at.selectbox]
    return "\n".join(parts)


def field(at: AppTest, name: str) -> TextInput:
    """A field of the connection form (its key carries the form's generation)."""
    return next(w for w in at.text_input if str(w.key).startswith(f"conn-{name}-"))


def fill(at: AppTest, **fields: str) -> None:
    for name, value in fields.items():
        field(at, name).set_value(value)


def save(at: AppTest) -> AppTest:
    button = next(b for b in at.button if b.label == "Save and use")
    return button.click().run()


def leaks(secret: str) -> list[str]:
    return [
        str(p)
        for p in data_dir().rglob("*")
        if p.is_file() and p.name != KEYS_FILE and secret.encode() in p.read_bytes()
    ]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("KAITO_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    at = AppTest.from_file(WEBAPP, default_timeout=30)
    at.run()
    assert not at.exception
    return at


def test_add_a_connection_uses_it_and_keeps_the_key_out(app: AppTest) -> None:
    at = app
    with standin_server(Behaviour(api_key=KEY, model="keyed-model")) as (url, behaviour):
        assert at.selectbox(key="conn-edit").options == ["New connection", "local"]
        fill(at, name="prod", url=url.removeprefix("http://") + "/v1/", key=KEY)
        save(at)
        assert not at.exception
        conn = ConnectionStore().get("prod")
        assert conn.url == url and conn.stored_key
        assert ConnectionStore().api_key(conn) == KEY
        # in use at once: the endpoint, the caption and the keyed server's models
        assert at.selectbox(key="connection").value == "prod"
        assert at.text_input(key="endpoint").value == url
        assert at.selectbox(key="model").options == ["keyed-model"]
        assert any("(prod)" in c.value for c in at.sidebar.caption)
        assert any(f"Saved prod ({url})" in s.value for s in at.success)
        # the edit form shows where the key is, never the key
        assert at.selectbox(key="conn-edit").value == "prod"
        assert "stored, ending …f0aa" in page_text(at)
        assert KEY not in page_text(at)
        assert field(at, "key").value in ("", None)
        at.chat_input[0].set_value("hi").run()
        assert not at.exception
        headers = [{k.lower(): v for k, v in h.items()} for h in behaviour.headers]
        assert headers and all(h.get("authorization") == f"Bearer {KEY}" for h in headers)
    assert KEY not in page_text(at)
    assert leaks(KEY) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"name": "", "url": "http://h:1"}, "give the connection a name", id="no-name"),
        pytest.param({"name": "a b", "url": "http://h:1"}, "connection name 'a b' is not valid", id="name"),
        pytest.param({"name": "x", "url": ""}, "give the server's URL", id="no-url"),
        pytest.param({"name": "x", "url": "ftp://host"}, "URL 'ftp://host' is not valid", id="scheme"),
        pytest.param({"name": "x", "url": "http://h:port"}, "URL 'http://h:port' is not valid", id="port"),
        pytest.param({"name": "x", "url": "http://a b"}, "URL 'http://a b' is not valid", id="space"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error_and_saves_nothing(
    app: AppTest, fields: dict[str, str], message: str
) -> None:
    at = app
    fill(at, **fields, key=KEY)
    save(at)
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert ConnectionStore().names() == ["local"]
    assert KEY not in page_text(at)


def test_a_name_taken_says_to_edit_it(app: AppTest) -> None:
    ConnectionStore().add(Connection("prod", "http://127.0.0.1:9"))
    at = app.run()
    fill(at, name="prod", url="http://127.0.0.1:10")
    save(at)
    assert any("'prod' exists already: choose it above to edit it" in e.value for e in at.error)
    assert ConnectionStore().get("prod").url == "http://127.0.0.1:9"


def test_edit_replaces_the_key_or_keeps_it(app: AppTest) -> None:
    with standin_server(Behaviour(api_key=NEW_KEY, model="keyed-model")) as (url, behaviour):
        store = ConnectionStore()
        store.add(Connection("prod", url), KEY)
        at = app.run()
        at.selectbox(key="conn-edit").set_value("prod").run()
        assert field(at, "url").value == url
        # a new key replaces the old one and is used at once
        fill(at, key=NEW_KEY)
        save(at)
        assert not at.exception
        assert store.api_key(store.get("prod")) == NEW_KEY
        assert at.selectbox(key="model").options == ["keyed-model"]
        last = {k.lower(): v for k, v in behaviour.headers[-1].items()}
        assert last.get("authorization") == f"Bearer {NEW_KEY}"
        assert NEW_KEY not in page_text(at)
        # a new URL with the key field empty keeps the key
        fill(at, url="localhost:1234")
        save(at)
        conn = store.get("prod")
        assert conn.url == "http://localhost:1234" and store.api_key(conn) == NEW_KEY
        # and the key can be dropped
        next(c for c in at.checkbox if str(c.key).startswith("conn-drop-key-")).check()
        save(at)
        conn = store.get("prod")
        assert not conn.stored_key and store.api_key(conn) is None
        assert at.session_state.api_key is None
    assert leaks(NEW_KEY) == [] and leaks(KEY) == []


def test_removing_the_connection_in_use_falls_back_to_local(app: AppTest) -> None:
    with standin_server(Behaviour(model="remote-model")) as (url, _):
        ConnectionStore().add(Connection("remote", url), KEY)
        at = app.run()
        at.selectbox(key="connection").set_value("remote").run()
        assert at.text_input(key="endpoint").value == url
        at.selectbox(key="conn-edit").set_value("remote").run()
        at.button(key="conn-remove").click().run()
        assert any("Remove remote and its stored key?" in w.value for w in at.warning)
        at.button(key="conn-remove-no").click().run()
        assert ConnectionStore().names() == ["local", "remote"]
        at.button(key="conn-remove").click().run()
        at.button(key="conn-remove-yes").click().run()
        assert not at.exception
    assert ConnectionStore().names() == ["local"]
    assert KEY not in (data_dir() / KEYS_FILE).read_text()
    assert at.selectbox(key="connection").value == "local"
    local = ConnectionStore().get("local").url
    assert at.text_input(key="endpoint").value == local
    assert at.session_state.api_key is None
    assert any(f"Removed remote. The chat uses local ({local}) now." in s.value for s in at.success)
    assert at.selectbox(key="conn-edit").value == "New connection"
    # the built-in local connection can be edited but not removed
    at.selectbox(key="conn-edit").set_value("local").run()
    assert not [b for b in at.button if b.key == "conn-remove"]
