"""The pykaito web chat (Streamlit script): ``kaito ui`` or ``streamlit run`` this file.

The endpoint comes from ``$KAITO_ENDPOINT`` (``kaito ui --endpoint`` sets it) and can be
changed in the sidebar. Conversations live in the same SQLite history as ``kaito chat``.

The app is a list of pages (``PAGES``); the chat is the first. Another page is a function
added to that list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import streamlit as st

from pykaito.apps.common import DEFAULT_SYSTEM_PROMPT, demo_notice, is_demo_model
from pykaito.apps.connections import CONNECTION_ENV
from pykaito.apps.export import MIME, SUFFIXES, export
from pykaito.apps.history import (
    Conversation,
    ConversationGone,
    HistoryError,
    HistoryStore,
    Message,
    date_group,
    finish_label,
    plural,
    short_time,
)
from pykaito.apps.titles import TitleJob, first_exchange_title
from pykaito.apps.turns import ReplyTurn, stop_turn, stream_into
from pykaito.apps.webconnections import (
    CUSTOM_URL,
    api_key,
    connection_names,
    connections_panel,
    on_connection_change,
    on_endpoint_edit,
)
from pykaito.client.chat import (
    ChatClient,
    ChatError,
    ChatParams,
    HealthStatus,
    default_endpoint,
    normalize_endpoint,
)

PRESETS: dict[str, str] = {
    "Helpful assistant": DEFAULT_SYSTEM_PROMPT,
    "Concise": "Answer in as few words as possible.",
    "Coding helper": (
        "You are an expert programmer. Answer with working code in fenced Markdown code blocks, "
        "then a short explanation."
    ),
    "Teacher": "Explain step by step, for someone new to the topic, with a small example.",
    "None": "",
}
CUSTOM = "Custom"
RECONNECT_EVERY_S = 3
LIST_HEIGHT = 320  # px: the conversation list scrolls, the settings above it stay in reach


def init_state() -> None:
    defaults: dict[str, object] = {
        "endpoint": default_endpoint(),
        "connection": os.environ.get(CONNECTION_ENV) or CUSTOM_URL,
        "api_key": None,  # from a saved connection; only in this session's memory
        "temperature": 0.7,
        "max_tokens": 512,
        "top_p": 1.0,
        "preset": "Helpful assistant",
        "system_prompt": PRESETS["Helpful assistant"],
        "conv_id": None,
        "confirm_delete": False,
    }
    first = "connection" not in st.session_state
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
    if first and st.session_state.connection != CUSTOM_URL:
        on_connection_change()  # `kaito ui --connection NAME`: its URL and key
    wanted = st.query_params.get("c")
    if wanted and st.session_state.conv_id is None:
        open_conversation(wanted)


def open_store() -> HistoryStore:
    try:
        return HistoryStore()
    except HistoryError as exc:
        st.error(str(exc))
        st.stop()
        raise  # not reached: st.stop() ends the run


def on_preset_change() -> None:
    preset = st.session_state.preset
    if preset in PRESETS:
        st.session_state.system_prompt = PRESETS[preset]


def on_prompt_edit() -> None:
    if st.session_state.system_prompt != PRESETS.get(st.session_state.preset):
        st.session_state.preset = CUSTOM


def select_conversation(conv_id: str | None) -> None:
    st.session_state.conv_id = conv_id
    st.session_state.confirm_delete = False
    if conv_id:
        st.query_params["c"] = conv_id
    else:
        st.query_params.clear()


def open_conversation(conv_id: str) -> None:
    """Resume a conversation with the system prompt and settings it was last used with."""
    select_conversation(conv_id)
    try:
        conv = HistoryStore().get(conv_id)
    except HistoryError:
        return
    system = conv.system_prompt or ""
    st.session_state.system_prompt = system
    named = [name for name, text in PRESETS.items() if text == system]
    st.session_state.preset = named[0] if named else CUSTOM
    for key in ("temperature", "max_tokens", "top_p"):
        if key in conv.params:
            st.session_state[key] = conv.params[key]


def current_params() -> ChatParams:
    return ChatParams(
        temperature=float(st.session_state.temperature),
        max_tokens=int(st.session_state.max_tokens),
        top_p=float(st.session_state.top_p),
    )


@st.cache_data(ttl=15, show_spinner=False)
def cached_models(endpoint: str, connection: str, _api_key: str | None = None) -> list[str]:
    with ChatClient(endpoint, api_key=_api_key, retries=0) as client:
        return client.list_models()


def stats_caption(msg: Message) -> str:
    parts = [short_time(msg.created_at)]
    if msg.role == "assistant" and msg.completion_tokens is not None:
        if msg.prompt_tokens is not None:
            parts.append(f"{msg.prompt_tokens} → {msg.completion_tokens} tokens")
        else:
            parts.append(plural(msg.completion_tokens, "token"))
        if msg.ttft_s is not None:
            parts.append(f"TTFT {msg.ttft_s * 1000:.0f} ms")
        if msg.tokens_per_s is not None:
            parts.append(f"{msg.tokens_per_s:.1f} tokens/s")
    label = finish_label(msg.finish_reason) if msg.role == "assistant" else None
    if label:
        parts.append(f"**{label}**")
    return " · ".join(parts)


def list_label(conv: Conversation) -> str:
    """The title, with the day when the group heading does not say it (this week, older)."""
    group = date_group(conv.updated_at)
    stamp = datetime.fromisoformat(conv.updated_at).astimezone()
    if group == "Previous 7 days":
        return f"{conv.title} · {stamp:%a}"
    if group == "Older":
        return f"{conv.title} · {stamp:%Y-%m-%d}"
    return conv.title


# the sidebar


def sidebar_this_conversation(store: HistoryStore, conv: Conversation) -> None:
    with st.sidebar.expander("This conversation", icon=":material/chat:"):
        new_title = st.text_input("Title", value=conv.title, key=f"title-{conv.id}")
        if st.button("Rename", key="rename") and new_title.strip() and new_title != conv.title:
            store.rename(conv.id, new_title)
            st.rerun()
        st.caption("Export")
        row = st.container(horizontal=True, gap="small")
        for fmt, label in (("md", "Markdown"), ("json", "JSON"), ("pdf", "PDF")):
            # Markdown and JSON are cheap and go in the page; a PDF is drawn when asked for.
            row.download_button(
                label,
                data=_exporter(store, conv.id, fmt) if fmt == "pdf" else export(store, conv.id, fmt),
                file_name=f"conversation-{conv.id}{SUFFIXES[fmt]}",
                mime=MIME[fmt],
                icon=":material/download:",
                on_click="ignore",
                key=f"export-{fmt}",
            )
        if not st.session_state.confirm_delete:
            if st.button("Delete", key="delete", icon=":material/delete:"):
                st.session_state.confirm_delete = True
                st.rerun()
        else:
            st.warning("Delete this conversation for good?")
            yes, no = st.columns(2)
            if yes.button("Delete", key="delete-yes", type="primary"):
                store.delete(conv.id)
                select_conversation(None)
                st.rerun()
            if no.button("Keep", key="delete-no"):
                st.session_state.confirm_delete = False
                st.rerun()


def _exporter(store: HistoryStore, conv_id: str, fmt: str) -> Callable[[], bytes]:
    return lambda: export(store, conv_id, fmt)


def sidebar_conversations(store: HistoryStore, conv: Conversation | None) -> None:
    query = st.sidebar.text_input("Search", key="search", placeholder="Search conversations")
    found: list[tuple[Conversation, str]]
    if query:
        found = [(hit.conversation, hit.snippet) for hit in store.search(query)]
        if not found:
            st.sidebar.caption("No conversation matches.")
    else:
        found = [(item, "") for item in store.list_conversations(limit=100)]
    if not found:
        return
    listing = st.sidebar.container(height=LIST_HEIGHT, border=False, key="conversation-list")
    group = None
    for item, snippet in found:
        if not query and date_group(item.updated_at) != group:
            group = date_group(item.updated_at)
            listing.caption(group)
        listing.button(
            list_label(item),
            key=f"conv-{item.id}",
            help=f"{short_time(item.updated_at)} · {plural(item.message_count, 'message')}",
            type="primary" if conv is not None and item.id == conv.id else "tertiary",
            width="stretch",
            on_click=open_conversation,
            args=(item.id,),
        )
        if snippet:
            listing.caption(snippet)


def sidebar_settings(health: HealthStatus) -> str | None:
    """The settings panel; returns the chosen model (None while the server is away)."""
    model: str | None = None
    with st.sidebar.expander("Settings", icon=":material/tune:", key="settings-panel"):
        names = connection_names()
        if st.session_state.connection not in names:
            st.session_state.connection = CUSTOM_URL
        st.selectbox(
            "Connection",
            names,
            key="connection",
            on_change=on_connection_change,
            help="Saved under Connections below or with `kaito connections add`; keys stay out of history",
        )
        st.text_input(
            "Endpoint",
            key="endpoint",
            on_change=on_endpoint_edit,
            help="The server root, e.g. http://localhost:8080",
        )
        if health.ready:
            try:
                models = cached_models(health.endpoint, st.session_state.connection, api_key())
            except ChatError as exc:
                st.error(str(exc))
                models = []
            if models:
                if st.session_state.get("model") not in models:
                    st.session_state.model = models[0]
                model = st.selectbox("Model", models, key="model", help="The models this server lists")
        st.slider("Temperature", 0.0, 2.0, step=0.05, key="temperature")
        st.number_input("Max tokens", min_value=1, max_value=32768, step=16, key="max_tokens")
        st.slider("Top p", 0.0, 1.0, step=0.01, key="top_p")
        st.selectbox("System prompt", [*PRESETS, CUSTOM], key="preset", on_change=on_preset_change)
        st.text_area("System message", key="system_prompt", height=100, on_change=on_prompt_edit)
    return model


def sidebar_status(health: HealthStatus, messages: list[Message]) -> None:
    colour = {"connected": "green", "loading": "orange", "offline": "red"}[health.label]
    via = "" if st.session_state.connection == CUSTOM_URL else f" ({st.session_state.connection})"
    st.sidebar.caption(f":{colour}[●] {health.label} · {health.endpoint}{via}")
    replies = [m for m in messages if m.role == "assistant" and m.completion_tokens is not None]
    if replies:
        prompt = sum(m.prompt_tokens or 0 for m in replies)
        completion = sum(m.completion_tokens or 0 for m in replies)
        rates = [m.tokens_per_s for m in replies if m.tokens_per_s is not None]
        ttfts = [m.ttft_s for m in replies if m.ttft_s is not None]
        count = plural(len(replies), "reply", "replies")
        line = f"Session: {count} · {prompt} prompt + {completion} completion tokens"
        if ttfts:
            line += f" · mean TTFT {sum(ttfts) / len(ttfts) * 1000:.0f} ms"
        if rates:
            line += f" · {sum(rates) / len(rates):.1f} tokens/s"
        st.sidebar.caption(line)


# the server-down page


@st.fragment(run_every=RECONNECT_EVERY_S)
def reconnect_watch(endpoint: str) -> None:
    """While the server is away, check /health every few seconds and reload once it is back."""
    with ChatClient(endpoint, api_key=api_key(), retries=0) as client:
        status = client.health(timeout_s=1.5)
    if status.ready:
        st.rerun(scope="app")
    st.caption(f"Checking again every {RECONNECT_EVERY_S} s · last check {datetime.now():%H:%M:%S}")


def server_down_page(health: HealthStatus) -> None:
    if health.reachable:
        st.warning(f"{health.endpoint} is loading its model. The chat opens as soon as it is ready.")
    else:
        st.error(f"Cannot reach {health.endpoint}: is `kaito connect` or `kaito up` running?")
        st.markdown(
            "- Start a local server with the built-in model: `kaito up`\n"
            "- Or forward a cluster Workspace to this machine: `kaito connect WORKSPACE`\n"
            "- Or change the endpoint under **Settings** in the sidebar.\n"
            "- Saved conversations stay readable in the sidebar meanwhile."
        )
    reconnect_watch(health.endpoint)


# messages and their actions


def new_turn(conv_id: str, model: str | None, **extra: object) -> ReplyTurn:
    system = st.session_state.system_prompt.strip()
    return ReplyTurn(conv_id, model, system, current_params(), **extra)  # type: ignore[arg-type]


def act(store: HistoryStore, action: Callable[[], ReplyTurn | None]) -> None:
    """Run a message action from a button: stop any reply first, then maybe start a new one."""
    stop_superseded_reply(store)
    try:
        turn = action()
    except HistoryError as exc:
        st.session_state.flash = str(exc)
        return
    if turn is not None:
        st.session_state.turn = turn


def message_actions(store: HistoryStore, msg: Message, model: str | None, ready: bool) -> None:
    row = st.container(horizontal=True, gap="small", key=f"actions-{msg.id}")
    branches = store.branches(msg)
    if branches.count > 1:
        previous = branches.ids[branches.index - 1] if branches.index > 0 else None
        following = branches.ids[branches.index + 1] if branches.index + 1 < branches.count else None
        row.button(
            "‹", key=f"prev-{msg.id}", type="tertiary", disabled=previous is None, help="Previous version",
            on_click=act, args=(store, lambda: store.show_branch(msg.conversation_id, previous or msg.id)),
        )  # fmt: skip
        row.caption(f"{branches.index + 1}/{branches.count}")
        row.button(
            "›", key=f"next-{msg.id}", type="tertiary", disabled=following is None, help="Next version",
            on_click=act, args=(store, lambda: store.show_branch(msg.conversation_id, following or msg.id)),
        )  # fmt: skip
    if msg.role == "user":
        with row.popover("Edit", icon=":material/edit:", type="tertiary", key=f"edit-{msg.id}"):
            with st.form(f"edit-form-{msg.id}", border=False):
                text = st.text_area("Edit the question", value=msg.content, key=f"edit-text-{msg.id}")
                sent = st.form_submit_button("Send", disabled=not ready)
            if sent and text.strip():
                act(store, lambda: _resend(store, msg, text.strip(), model))
                st.rerun()
    else:
        row.button(
            "Retry", key=f"retry-{msg.id}", icon=":material/refresh:", type="tertiary", disabled=not ready,
            help="Write this reply again (this one stays: ‹ › switch between them)",
            on_click=act, args=(store, lambda: _regenerate(store, msg, model)),
        )  # fmt: skip
        if msg.finish_reason in ("length", "stopped", "error") and msg.content:
            row.button(
                "Continue", key=f"continue-{msg.id}", icon=":material/play_arrow:", type="tertiary",
                disabled=not ready, help="Carry on from where this reply stopped",
                on_click=act, args=(store, lambda: _continue(store, msg, model)),
            )  # fmt: skip
    with row.popover("Copy", icon=":material/content_copy:", type="tertiary", key=f"copy-{msg.id}"):
        st.caption("The copy icon at the top right of the text puts it on the clipboard.")
        st.code(msg.content, language="markdown", wrap_lines=True)
    row.button(
        "Delete", key=f"del-{msg.id}", icon=":material/delete:", type="tertiary",
        help="Delete this message and what follows it",
        on_click=act, args=(store, lambda: _delete(store, msg)),
    )  # fmt: skip


def _resend(store: HistoryStore, msg: Message, text: str, model: str | None) -> ReplyTurn:
    store.add_message(msg.conversation_id, "user", text, parent_id=msg.parent_id, branch=True)
    return new_turn(msg.conversation_id, model)


def _regenerate(store: HistoryStore, msg: Message, model: str | None) -> ReplyTurn:
    store.rewind(msg.conversation_id, msg.parent_id)
    return new_turn(msg.conversation_id, model)


def _continue(store: HistoryStore, msg: Message, model: str | None) -> ReplyTurn:
    store.rewind(msg.conversation_id, msg.parent_id)
    return new_turn(msg.conversation_id, model, prefix=msg.content)


def _delete(store: HistoryStore, msg: Message) -> None:
    store.delete_message(msg.id)


def render_message(store: HistoryStore, msg: Message, model: str | None, actions: bool, ready: bool) -> None:
    with st.chat_message(msg.role):
        st.markdown(msg.content if msg.content else "*(no text arrived)*")
        st.caption(stats_caption(msg))
        if actions:
            message_actions(store, msg, model, ready)


# sending


def submit(store: HistoryStore, conv: Conversation | None, prompt: str, model: str | None) -> None:
    """Save the question, then rerun: the next run streams the reply with the input disabled."""
    params = current_params()
    system = st.session_state.system_prompt.strip()
    if conv is None:
        conv = store.create_conversation(model=model)
        select_conversation(conv.id)
    store.update_settings(conv.id, model=model, system_prompt=system, params=params.as_dict())
    store.add_message(conv.id, "user", prompt)
    st.session_state.turn = new_turn(conv.id, model)
    st.rerun()


def stop_superseded_reply(store: HistoryStore) -> None:
    """A new run while a reply streams means the user did something else: stop it, keep the text."""
    turn: ReplyTurn | None = st.session_state.get("turn")
    if turn is not None and turn.claimed:
        stop_turn(turn, store)
        st.session_state.turn = None


def stream_reply(store: HistoryStore, turn: ReplyTurn, messages: list[Message]) -> None:
    """Stream the reply to the last question; Stop (or any click) ends it and keeps what arrived."""
    client = ChatClient(st.session_state.endpoint, api_key=api_key(), retries=2)
    reason: str | None = None
    with st.chat_message("assistant"):
        st.button("Stop", key="stop", icon=":material/stop_circle:", help="Stop the reply")
        body = st.empty()
        body.markdown(turn.prefix or "*thinking…*")
        try:
            reply = client.stream_chat(turn.request(messages), turn.params, model=turn.model)
            if turn.attach(reply):
                for _ in stream_into(reply, turn.prefix, body.markdown):
                    pass
        except ChatError as exc:
            st.session_state.flash = str(exc)  # shown after the rerun below
            reason = "error"
        finally:
            # Also runs when this run is stopped (a click elsewhere, a closed tab).
            final = turn.finish(store, reason)
            if final is not None and not turn.prefix:
                turns = [(m.role, m.content) for m in messages] + [("assistant", turn.text)]
                job = first_exchange_title(
                    store, turn.conv_id, client.endpoint, api_key(), turn.model, turns, final
                )
                if job is not None:
                    st.session_state.title_job = job
            if st.session_state.get("turn") is turn:
                st.session_state.turn = None
            client.close()
    st.rerun()


# the generated title


def title_pending(conv: Conversation | None) -> bool:
    """Whether a title for ``conv`` is on its way (or came after this run read the conversation)."""
    job: TitleJob | None = st.session_state.get("title_job")
    if job is None:
        return False
    if job.done and (conv is None or job.conv_id != conv.id or job.title in (None, conv.title)):
        del st.session_state.title_job
        return False
    return conv is not None and job.conv_id == conv.id


@st.fragment(run_every=1)
def title_watch() -> None:
    """Reload the page once the model's title is in (the chat goes on meanwhile)."""
    job: TitleJob | None = st.session_state.get("title_job")
    if job is None or job.done:
        st.rerun(scope="app")


# the page


def chat_page() -> None:
    init_state()
    store = open_store()
    conv: Conversation | None = None
    if st.session_state.conv_id:
        try:
            conv = store.get(st.session_state.conv_id)
        except ConversationGone:
            st.session_state.flash = "This conversation was deleted (perhaps in another window)."
            select_conversation(None)
        except HistoryError as exc:
            st.session_state.flash = str(exc)
            select_conversation(None)
    stop_superseded_reply(store)
    st.session_state.endpoint = normalize_endpoint(st.session_state.endpoint)
    with ChatClient(st.session_state.endpoint, api_key=api_key(), retries=0) as probe:
        health = probe.health(timeout_s=2.0)

    st.sidebar.title("pykaito chat")
    st.sidebar.button(
        "New chat", icon=":material/add:", width="stretch", on_click=select_conversation, args=(None,)
    )
    if conv is not None:
        sidebar_this_conversation(store, conv)
    model = sidebar_settings(health)
    connections_panel()
    try:
        messages = store.messages(conv.id) if conv else []
    except HistoryError as exc:
        st.session_state.flash = str(exc)
        messages = []
    sidebar_status(health, messages)
    sidebar_conversations(store, conv)

    turn: ReplyTurn | None = st.session_state.get("turn")
    if turn is not None and (conv is None or turn.conv_id != conv.id):
        st.session_state.turn = turn = None  # the conversation went away meanwhile

    st.subheader(conv.title if conv else "New chat")
    if turn is None and title_pending(conv):
        title_watch()
    if is_demo_model(model) and len(messages) < 2:
        st.caption(f":material/info: {demo_notice(model or '')}")
    elif not messages:
        st.caption("Ask anything. Replies stream from your own model; nothing leaves your endpoint.")
    for msg in messages:
        render_message(store, msg, model, actions=turn is None, ready=health.ready)
    flash = st.session_state.pop("flash", None)
    if flash:
        st.error(flash)
    if not health.ready:
        server_down_page(health)

    # One chat input, always the same element (a fixed key), disabled while a reply streams.
    prompt = st.chat_input("Message the model", key="prompt", disabled=not health.ready or turn is not None)
    if turn is not None:
        if turn.claim() and conv is not None:
            stream_reply(store, turn, messages)
    elif prompt and health.ready:
        submit(store, conv, prompt, model)


PERFORMANCE_PAGE = Path(__file__).with_name("pages") / "Performance.py"
PAGES: list[st.Page] = [
    st.Page(chat_page, title="Chat", icon=":material/chat:", default=True),
    st.Page(str(PERFORMANCE_PAGE), title="Performance", icon=":material/speed:"),
]


def main() -> None:
    st.set_page_config(page_title="pykaito chat", page_icon="💬")
    st.navigation(PAGES, position="sidebar" if len(PAGES) > 1 else "hidden").run()


main()
