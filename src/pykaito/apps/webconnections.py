"""The web app's connections: choose a saved one, add, edit (a new URL or key) and remove them.

The same store as `kaito connections` (``connections.json`` plus the 0600 key file). A key typed
here goes straight to that store and is kept in this browser session's memory while the
connection is in use; it is never shown back (only its last four characters), never logged and
never written to the history.
"""

from __future__ import annotations

import streamlit as st

from pykaito.apps.connections import LOCAL, Connection, ConnectionStore
from pykaito.errors import InputError

CUSTOM_URL = "Custom URL"
NEW = "New connection"


def api_key() -> str | None:
    key = st.session_state.get("api_key")
    return key if isinstance(key, str) else None


def use_connection(name: str) -> None:
    """Make ``name`` the connection in use: its URL in the endpoint field, its key in memory."""
    st.session_state.api_key = None
    st.session_state.connection = name
    if name == CUSTOM_URL:
        return
    try:
        store = ConnectionStore()
        conn = store.get(name)
        st.session_state.api_key = store.api_key(conn)
    except InputError as exc:
        st.session_state.flash = str(exc)
        st.session_state.connection = CUSTOM_URL
        return
    st.session_state.endpoint = conn.url


def on_connection_change() -> None:
    use_connection(st.session_state.connection)


def on_endpoint_edit() -> None:
    """A URL typed by hand: no saved connection, no saved key."""
    st.session_state.connection = CUSTOM_URL
    st.session_state.api_key = None


def connection_names() -> list[str]:
    try:
        return [*ConnectionStore().names(), CUSTOM_URL]
    except InputError as exc:
        st.sidebar.error(str(exc))
        return [CUSTOM_URL]


def key_hint(store: ConnectionStore, conn: Connection) -> str:
    """Where the key comes from, with at most its last four characters."""
    if not conn.stored_key:
        return conn.key_source()
    try:
        key = store.api_key(conn)
    except InputError:
        return "stored, but missing from the key file"
    return f"stored, ending …{key[-4:]}" if key and len(key) >= 12 else "stored"


# the panel's actions (callbacks: they run before the page is drawn again)


def _fail(message: str) -> None:
    st.session_state.conn_error = message


def _field(name: str) -> str:
    """The form field's widget key: a new generation is a new, empty form (the browser's too)."""
    return f"conn-{name}-{st.session_state.get('conn_form', 0)}"


def _value(name: str) -> str:
    return str(st.session_state.get(_field(name)) or "").strip()


def _clear_form() -> None:
    for name in ("name", "url", "key", "drop-key"):
        st.session_state.pop(_field(name), None)
    st.session_state.conn_form = st.session_state.get("conn_form", 0) + 1
    st.session_state.conn_error = None


def on_edit_choice() -> None:
    _clear_form()
    st.session_state.confirm_remove = False


def save_connection() -> None:
    """Add a connection, or change the URL/key of the one chosen for editing; then use it."""
    editing = st.session_state.get("conn-edit", NEW)
    url = _value("url")
    key = _value("key") or None
    store = ConnectionStore()
    try:
        if editing == NEW:
            name = _value("name")
            if not name:
                raise InputError("give the connection a name, e.g. 'prod'")
            if name in store.names() and name != LOCAL:
                raise InputError(f"a connection named {name!r} exists already: choose it above to edit it")
            saved = store.add(Connection(name=name, url=url), key, replace=name == LOCAL)
        else:
            drop = bool(st.session_state.get(_field("drop-key")))
            saved = store.edit(editing, url=url or None, api_key=key, drop_key=drop and not key)
    except InputError as exc:
        _fail(str(exc))
        return
    _clear_form()
    st.session_state["conn-edit"] = saved.name
    st.session_state.conn_note = f"Saved {saved.name} ({saved.url})."
    use_connection(saved.name)


def remove_connection() -> None:
    """Forget the connection chosen for editing; the chat falls back to the local server if it was in use."""
    name = st.session_state.get("conn-edit", NEW)
    try:
        ConnectionStore().remove(name)
    except InputError as exc:
        _fail(str(exc))
        return
    _clear_form()
    st.session_state.confirm_remove = False
    st.session_state["conn-edit"] = NEW
    note = f"Removed {name}."
    if st.session_state.get("connection") == name:
        use_connection(LOCAL)
        note += f" The chat uses {LOCAL} ({st.session_state.endpoint}) now."
    st.session_state.conn_note = note


def ask_remove(confirm: bool) -> None:
    st.session_state.confirm_remove = confirm


# the panel


def connections_panel() -> None:
    """Sidebar panel: pick a saved connection to edit or add a new one."""
    with st.sidebar.expander("Connections", icon=":material/lan:", key="connections-panel"):
        try:
            store = ConnectionStore()
            saved = {conn.name: conn for conn in store.all()}
        except InputError as exc:
            st.error(str(exc))
            return
        if st.session_state.get("conn-edit") not in (NEW, *saved):
            st.session_state["conn-edit"] = NEW
        editing = st.selectbox("Add or edit", [NEW, *saved], key="conn-edit", on_change=on_edit_choice)
        conn = saved.get(editing)
        with st.form("connection-form", border=False):
            if conn is None:
                st.text_input("Name", key=_field("name"), placeholder="prod")
                st.text_input("URL", key=_field("url"), placeholder="http://HOST:8080")
                st.text_input(
                    "API key", key=_field("key"), type="password", placeholder="none",
                    help="Kept in a private file (mode 0600), never in the history",
                )  # fmt: skip
            else:
                st.text_input("URL", value=conn.url, key=_field("url"))
                st.caption(f"API key: {key_hint(store, conn)}")
                st.text_input(
                    "New API key", key=_field("key"), type="password", placeholder="keep the current key",
                    help="Replaces the key; leave empty to keep it",
                )  # fmt: skip
                if conn.stored_key or conn.key_env or conn.key_file:
                    st.checkbox("Remove the API key", key=_field("drop-key"))
            st.form_submit_button("Save and use", icon=":material/save:", on_click=save_connection)
        error = st.session_state.get("conn_error")
        if error:
            st.error(error)
        note = st.session_state.pop("conn_note", None)
        if note:
            st.success(note)
        if conn is not None and store.has(editing):
            if not st.session_state.get("confirm_remove"):
                st.button(
                    "Remove", key="conn-remove", icon=":material/delete:", on_click=ask_remove, args=(True,)
                )
            else:
                st.warning(f"Remove {editing} and its stored key?")
                yes, no = st.columns(2)
                yes.button("Remove", key="conn-remove-yes", type="primary", on_click=remove_connection)
                no.button("Keep", key="conn-remove-no", on_click=ask_remove, args=(False,))
