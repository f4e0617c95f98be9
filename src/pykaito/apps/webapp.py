"""The pykaito web chat (Streamlit script): ``kaito ui`` or ``streamlit run`` this file.

The endpoint comes from ``$KAITO_ENDPOINT`` (``kaito ui --endpoint`` sets it) and can be
changed in the sidebar. Conversations live in the same SQLite history as ``kaito chat``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import streamlit as st

from pykaito.apps.history import Conversation, HistoryError, HistoryStore, Message, short_time
from pykaito.client.chat import (
    ChatClient,
    ChatError,
    ChatParams,
    ChatReply,
    HealthStatus,
    default_endpoint,
    normalize_endpoint,
)

PRESETS: dict[str, str] = {
    "Helpful assistant": "You are a helpful assistant. Answer clearly and concisely.",
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


def init_state() -> None:
    defaults: dict[str, object] = {
        "endpoint": default_endpoint(),
        "temperature": 0.7,
        "max_tokens": 512,
        "top_p": 1.0,
        "preset": "Helpful assistant",
        "system_prompt": PRESETS["Helpful assistant"],
        "conv_id": None,
        "confirm_delete": False,
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
    wanted = st.query_params.get("c")
    if wanted and st.session_state.conv_id is None:
        open_conversation(wanted)


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
def cached_models(endpoint: str) -> list[str]:
    with ChatClient(endpoint, retries=0) as client:
        return client.list_models()


def stats_caption(msg: Message) -> str:
    parts = [short_time(msg.created_at)]
    if msg.role == "assistant" and msg.completion_tokens is not None:
        if msg.prompt_tokens is not None:
            parts.append(f"{msg.prompt_tokens} → {msg.completion_tokens} tokens")
        else:
            parts.append(f"{msg.completion_tokens} tokens")
        if msg.ttft_s is not None:
            parts.append(f"TTFT {msg.ttft_s * 1000:.0f} ms")
        if msg.tokens_per_s is not None:
            parts.append(f"{msg.tokens_per_s:.1f} tokens/s")
        if msg.finish_reason and msg.finish_reason != "stop":
            parts.append(f"({msg.finish_reason})")
    return " · ".join(parts)


def sidebar_conversations(store: HistoryStore, conv: Conversation | None) -> None:
    st.sidebar.button(
        "New chat", icon=":material/add:", width="stretch", on_click=select_conversation, args=(None,)
    )
    query = st.sidebar.text_input("Search", key="search", placeholder="Search conversations")
    if query:
        found = [hit.conversation for hit in store.search(query)]
        if not found:
            st.sidebar.caption("No conversation matches.")
    else:
        found = store.list_conversations(limit=30)
    for item in found:
        st.sidebar.button(
            item.title,
            key=f"conv-{item.id}",
            help=f"{short_time(item.updated_at)} · {item.message_count} messages",
            type="primary" if conv is not None and item.id == conv.id else "secondary",
            width="stretch",
            on_click=open_conversation,
            args=(item.id,),
        )
    if conv is None:
        return
    with st.sidebar.expander("This conversation", icon=":material/chat:"):
        new_title = st.text_input("Title", value=conv.title, key=f"title-{conv.id}")
        if st.button("Rename", key="rename") and new_title.strip() and new_title != conv.title:
            store.rename(conv.id, new_title)
            st.rerun()
        left, right = st.columns(2)
        left.download_button(
            "Markdown",
            data=store.export_markdown(conv.id),
            file_name=f"conversation-{conv.id}.md",
            mime="text/markdown",
            icon=":material/download:",
            on_click="ignore",
        )
        right.download_button(
            "JSON",
            data=store.export_json(conv.id),
            file_name=f"conversation-{conv.id}.json",
            mime="application/json",
            icon=":material/download:",
            on_click="ignore",
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


def sidebar_settings(health: HealthStatus) -> str | None:
    """The settings panel; returns the chosen model (None while the server is away)."""
    model: str | None = None
    with st.sidebar.expander("Settings", icon=":material/tune:", expanded=False):
        st.text_input("Endpoint", key="endpoint", help="The server root, e.g. http://localhost:8080")
        if health.ready:
            try:
                models = cached_models(health.endpoint)
            except ChatError as exc:
                st.error(str(exc))
                models = []
            if models:
                if st.session_state.get("model") not in models:
                    st.session_state.model = models[0]
                model = st.selectbox("Model", models, key="model")
        st.slider("Temperature", 0.0, 2.0, step=0.05, key="temperature")
        st.number_input("Max tokens", min_value=1, max_value=32768, step=16, key="max_tokens")
        st.slider("Top p", 0.0, 1.0, step=0.01, key="top_p")
        st.selectbox("System prompt", [*PRESETS, CUSTOM], key="preset", on_change=on_preset_change)
        st.text_area("System message", key="system_prompt", height=100, on_change=on_prompt_edit)
    return model


def sidebar_status(health: HealthStatus, messages: list[Message]) -> None:
    colour = {"connected": "green", "loading": "orange", "offline": "red"}[health.label]
    st.sidebar.caption(f":{colour}[●] {health.label} · {health.endpoint}")
    replies = [m for m in messages if m.role == "assistant" and m.completion_tokens is not None]
    if replies:
        prompt = sum(m.prompt_tokens or 0 for m in replies)
        completion = sum(m.completion_tokens or 0 for m in replies)
        rates = [m.tokens_per_s for m in replies if m.tokens_per_s is not None]
        ttfts = [m.ttft_s for m in replies if m.ttft_s is not None]
        count = f"{len(replies)} {'reply' if len(replies) == 1 else 'replies'}"
        line = f"Session: {count} · {prompt} prompt + {completion} completion tokens"
        if ttfts:
            line += f" · mean TTFT {sum(ttfts) / len(ttfts) * 1000:.0f} ms"
        if rates:
            line += f" · {sum(rates) / len(rates):.1f} tokens/s"
        st.sidebar.caption(line)


@st.fragment(run_every=RECONNECT_EVERY_S)
def reconnect_watch(endpoint: str) -> None:
    """While the server is away, check /health every few seconds and reload once it is back."""
    with ChatClient(endpoint, retries=0) as client:
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
            "- Or change the endpoint under **Settings** in the sidebar."
        )
    reconnect_watch(health.endpoint)


def render_message(msg: Message) -> None:
    with st.chat_message(msg.role):
        st.markdown(msg.content)
        st.caption(stats_caption(msg))


def stream_into(reply: ChatReply, target: st.delta_generator.DeltaGenerator) -> Iterator[str]:
    text = ""
    for piece in reply:
        text += piece
        target.markdown(text + "▌")
        yield piece
    target.markdown(text)


def submit(store: HistoryStore, conv: Conversation | None, prompt: str, model: str | None) -> None:
    """Save the question, then rerun: the next run streams the reply with the input disabled."""
    params = current_params()
    system = st.session_state.system_prompt.strip()
    if conv is None:
        conv = store.create_conversation(model=model)
        select_conversation(conv.id)
    store.update_settings(conv.id, model=model, system_prompt=system or None, params=params.as_dict())
    store.add_message(conv.id, "user", prompt)
    st.session_state.pending = {"conv_id": conv.id, "model": model, "system": system}
    st.rerun()


class ActiveReply:
    """The reply being streamed, saved exactly once by whichever run ends it.

    With fast reruns, any click (Stop included) starts a new run on a new thread while the
    old one is still streaming; the new run stops this reply and saves what arrived.
    """

    def __init__(self, reply: ChatReply, conv_id: str, model: str | None, params: ChatParams) -> None:
        self.reply, self.conv_id, self.model, self.params = reply, conv_id, model, params
        self._lock = threading.Lock()
        self._saved = False

    def finish(self, store: HistoryStore) -> None:
        self.reply.close()
        with self._lock:
            if self._saved:
                return
            self._saved = True
            if self.reply.text:
                store.add_message(
                    self.conv_id,
                    "assistant",
                    self.reply.text,
                    model=self.model,
                    params=self.params.as_dict(),
                    stats=self.reply.stats,
                )


def stop_superseded_reply(store: HistoryStore) -> None:
    """A new run while a reply streams means the user did something else: stop it, keep the text."""
    active: ActiveReply | None = st.session_state.get("active")
    if active is not None:
        active.finish(store)
        st.session_state.active = None
        st.session_state.pending = None


def stream_reply(store: HistoryStore, messages: list[Message]) -> None:
    """Stream the reply to the last question; Stop (or any click) ends it and keeps what arrived."""
    pending = st.session_state.pending
    conv_id, model, system = pending["conv_id"], pending["model"], pending["system"]
    params = current_params()
    chat = [{"role": "system", "content": system}] if system else []
    chat += [m.as_chat() for m in messages]
    client = ChatClient(st.session_state.endpoint, retries=2)
    active: ActiveReply | None = None
    with st.chat_message("assistant"):
        st.button("Stop", key="stop", icon=":material/stop_circle:", help="Stop the reply")
        body = st.empty()
        body.markdown("*thinking…*")
        try:
            active = ActiveReply(client.stream_chat(chat, params, model=model), conv_id, model, params)
            st.session_state.active = active
            for _ in stream_into(active.reply, body):
                pass
        except ChatError as exc:
            st.session_state.flash = str(exc)  # shown after the rerun below
        finally:
            # Also runs when this run is stopped (a click elsewhere, a closed tab).
            if active is not None:
                active.finish(store)
            if st.session_state.get("active") is active:
                st.session_state.active = None
                st.session_state.pending = None
            client.close()
    st.rerun()


def main() -> None:
    st.set_page_config(page_title="pykaito chat", page_icon="💬")
    init_state()
    store = HistoryStore()
    conv: Conversation | None = None
    if st.session_state.conv_id:
        try:
            conv = store.get(st.session_state.conv_id)
        except HistoryError:
            select_conversation(None)
    stop_superseded_reply(store)
    st.session_state.endpoint = normalize_endpoint(st.session_state.endpoint)
    with ChatClient(st.session_state.endpoint, retries=0) as probe:
        health = probe.health(timeout_s=2.0)

    st.sidebar.title("pykaito chat")
    sidebar_conversations(store, conv)
    model = sidebar_settings(health)
    messages = store.messages(conv.id) if conv else []
    sidebar_status(health, messages)

    st.title(conv.title if conv else "New chat")
    if not messages:
        st.caption("Ask anything. Replies stream from your own model; nothing leaves your endpoint.")
    for msg in messages:
        render_message(msg)
    flash = st.session_state.pop("flash", None)
    if flash:
        st.error(flash)
    if not health.ready:
        server_down_page(health)

    pending = st.session_state.get("pending")
    if pending is not None and (conv is None or pending["conv_id"] != conv.id):
        st.session_state.pending = pending = None  # the conversation went away meanwhile
    prompt = st.chat_input(
        "Message the model" if health.ready else "Waiting for the server…",
        disabled=not health.ready or pending is not None,
    )
    if pending is not None:
        stream_reply(store, messages)
    elif prompt and health.ready:
        submit(store, conv, prompt, model)


main()
