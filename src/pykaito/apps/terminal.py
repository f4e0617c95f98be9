"""The terminal chat: ``kaito chat``.

Interactive on a terminal (rich for streaming Markdown, prompt_toolkit for input with history
and multi-line entry), plain in a pipe: ``echo "hi" | kaito chat`` prints one reply and exits.
Conversations go to the same SQLite history as the web app.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import HTML
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from pykaito.apps.common import CONTINUE_PROMPT, demo_notice, is_demo_model
from pykaito.apps.connections import Connection, ConnectionStore, check_name, check_url, read_key_file
from pykaito.apps.export import SUFFIXES, export, format_for
from pykaito.apps.history import (
    Conversation,
    ConversationGone,
    HistoryError,
    HistoryStore,
    Message,
    chat_turns,
    data_dir,
    finish_label,
    plural,
    short_time,
)
from pykaito.apps.titles import TitleJob, first_exchange_title
from pykaito.client.chat import (
    ChatClient,
    ChatError,
    ChatParams,
    ChatReply,
    HealthStatus,
    ReplyStats,
    SessionTotals,
)
from pykaito.errors import InputError

INPUT_HISTORY = "chat_input_history"

# Colours chosen to read on both dark and light backgrounds: no white, no yellow.
YOU = "bold blue"
BOT = "bold magenta"
META = "dim"
OK = "green"
ERR = "bold red"

HELP = """\
| command | what it does |
|---|---|
| `/help` | this list |
| `/system [TEXT\\|none]` | show, set or clear the system prompt |
| `/temperature [T]` | show or set the temperature (0–2) |
| `/max-tokens [N]` | show or set the reply length limit |
| `/top-p [P]` | show or set top-p (0–1) |
| `/model [NAME]` | list the server's models or switch |
| `/connect [NAME\\|URL]` | switch server (a saved connection or a URL); alone, list them |
| `/connect URL --save NAME` | switch and save it (`--api-key-file F` for a key) |
| `/connections` | the saved connections and where their keys come from |
| `/new` | start a new conversation |
| `/history [TEXT]` | recent conversations, or those containing TEXT |
| `/load ID` | resume a conversation (an id prefix is enough) |
| `/save TITLE` | name this conversation (it is saved as you go) |
| `/export [md\\|json\\|pdf] [PATH]` | write this conversation to a file |
| `/retry` | write the last reply again (the old one stays in the history) |
| `/edit [TEXT]` | change the last question and send it again (a new branch) |
| `/continue` | carry on with a reply that was cut off or stopped |
| `/copy` | put the last reply on the clipboard |
| `/stats` | token usage and speed for this session |
| `/clear` | clear the screen |
| `/exit` | leave (or Ctrl-D) |

Enter sends. **Esc Enter** or a trailing `\\` starts a new line. **Ctrl-C** stops a reply.
"""


@dataclass(frozen=True)
class ChatSettings:
    model: str | None = None
    system: str | None = None
    params: ChatParams = field(default_factory=ChatParams)


# Clipboard programs, tried in this order.
CLIPBOARDS = (
    ("wl-copy",),
    ("xclip", "-selection", "clipboard"),
    ("xsel", "--clipboard", "--input"),
    ("pbcopy",),
)


class TerminalChat:
    """One chat session: the conversation, its settings and the session's totals.

    With ``online=False`` (the server is down) the history can be read, loaded and exported;
    sending says how to start a server.
    """

    def __init__(
        self,
        client: ChatClient,
        store: HistoryStore,
        settings: ChatSettings,
        console: Console,
        *,
        live: bool = True,
        save: bool = True,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.console = console
        self.live = live
        self.save = save
        self.conversation: Conversation | None = None
        self.messages: list[Message] = []
        self.turns: list[dict[str, str]] = []  # what the model sees when nothing is saved
        self.totals = SessionTotals()
        self.last: ReplyStats | None = None
        self.last_text = ""
        self.running = True
        self.connection: str | None = None
        self._opened: list[ChatClient] = []  # clients /connect opened, closed by close()
        self.title_job: TitleJob | None = None

    def close(self) -> None:
        for client in self._opened:
            client.close()
        self._opened = []

    # sending

    def model(self) -> str:
        if self.settings.model is None:
            self.settings = replace(self.settings, model=self.client.default_model())
        assert self.settings.model is not None
        return self.settings.model

    def _conversation(self, model: str) -> Conversation:
        if self.conversation is None:
            self.conversation = self.store.create_conversation(
                model=model, system_prompt=self.settings.system, params=self.settings.params.as_dict()
            )
        self.store.update_settings(
            self.conversation.id,
            model=model,
            system_prompt=self.settings.system or "",
            params=self.settings.params.as_dict(),
        )
        return self.conversation

    def _refresh(self) -> None:
        if self.conversation is not None:
            self.messages = self.store.messages(self.conversation.id)

    def send(self, text: str, out: Callable[[ChatReply], None] | None = None) -> ReplyStats | None:
        """Send one user message, stream the reply and save both; Ctrl-C stops the reply."""
        model = self.model()
        if self.save:
            conv = self._conversation(model)
            self.store.add_message(conv.id, "user", text)
            self._refresh()
        else:
            self.turns.append({"role": "user", "content": text})
        return self._reply(model, out)

    def _history_for_model(self) -> list[Mapping[str, str]]:
        chat: list[Mapping[str, str]] = []
        if self.settings.system:
            chat.append({"role": "system", "content": self.settings.system})
        return chat + (chat_turns(self.messages) if self.save else self.turns)

    def _reply(
        self, model: str, out: Callable[[ChatReply], None] | None = None, prefix: str = ""
    ) -> ReplyStats | None:
        """Stream a reply to what the conversation holds, and keep it whatever ends it.

        A stopped reply (Ctrl-C), one cut at the token limit and one lost with the connection
        are saved with that reason, so a question never stands without its answer or a reason.
        """
        chat = self._history_for_model()
        if prefix:
            chat += [{"role": "assistant", "content": prefix}, {"role": "user", "content": CONTINUE_PROMPT}]
        reply: ChatReply | None = None
        reason: str | None = None
        failure: ChatError | None = None
        try:
            reply = self.client.stream_chat(chat, self.settings.params, model=model)
            if out is not None:
                out(reply)
            else:
                self._render(reply, prefix)
        except KeyboardInterrupt:
            reason = "stopped"
        except ChatError as exc:
            reason, failure = "error", exc
        finally:
            if reply is not None:
                reply.close()
        stats = reply.stats if reply is not None else None
        if stats is not None and stats.prompt_tokens is None and reason == "stopped":
            # stopped before the usage report: the prompt was read all the same
            stats = replace(stats, prompt_tokens=self.client.count_tokens(chat, model))
        reason = reason or (stats.finish_reason if stats is not None else None) or "error"
        if reason == "stopped" or (reason == "error" and failure is None):
            shown = "stopped" if reason == "stopped" else finish_label(reason)
            self.console.print(f"[{shown}]", style=META, markup=False, highlight=False)
        text = prefix + (reply.text if reply is not None else "")
        if self.save and self.conversation is not None:
            self.store.add_message(
                self.conversation.id,
                "assistant",
                text,
                model=model,
                params=self.settings.params.as_dict(),
                stats=stats,
                finish_reason=reason,
            )
            self._refresh()
            if out is None and not prefix:
                self._title(model, reason)
        elif text:
            self.turns.append({"role": "assistant", "content": text})
        if text:
            self.last_text = text
        if stats is not None:
            self.totals.add(stats)
            self.last = stats
        if failure is not None:
            raise failure
        return stats

    def _title(self, model: str, reason: str) -> None:
        """After the first exchange, the model names the conversation in the background."""
        if self.conversation is not None:
            self.title_job = first_exchange_title(
                self.store,
                self.conversation.id,
                self.client.endpoint,
                self.client.api_key or None,
                model,
                [(m.role, m.content) for m in self.messages],
                reason,
            )

    def _render(self, reply: ChatReply, prefix: str = "") -> None:
        self.console.print(Text("assistant", style=BOT))
        if not self.live:
            for piece in reply:
                self.console.file.write(piece)
                self.console.file.flush()
            self.console.file.write("\n")
        else:
            with Live(Markdown(prefix), console=self.console, refresh_per_second=12) as live:
                for _ in reply:
                    live.update(Markdown(prefix + reply.text))
                live.update(Markdown(prefix + reply.text))
        if reply.stats is not None:
            self.console.print(reply.stats.summary(), style=META, highlight=False)

    def _last(self, role: str) -> Message:
        for msg in reversed(self.messages):
            if msg.role == role:
                return msg
        what = "question" if role == "user" else "reply"
        raise InputError(f"no {what} in this conversation yet: send a message first")

    def _needs_saved(self, command: str) -> None:
        if not self.save:
            raise InputError(f"{command} works on saved conversations: run `kaito chat --save`")
        if self.conversation is None:
            raise InputError(f"nothing to {command.lstrip('/')} yet: send a message first")

    # commands

    def command(self, line: str) -> None:
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler = self._commands().get(name.lower())
        if handler is None:
            self.console.print(f"unknown command {name}: /help lists them", style=ERR, highlight=False)
            return
        try:
            handler(arg)
        except ConversationGone as exc:
            self._forget()
            self.console.print(str(exc), style=ERR, highlight=False)
        except (InputError, HistoryError, ChatError) as exc:
            self.console.print(str(exc), style=ERR, highlight=False)

    def _forget(self) -> None:
        """The conversation was deleted elsewhere: the next message starts a new one."""
        self.conversation = None
        self.messages = []

    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {
            "/help": lambda _: self.console.print(Markdown(HELP)),
            "/system": self.cmd_system,
            "/temperature": self.cmd_temperature,
            "/max-tokens": self.cmd_max_tokens,
            "/top-p": self.cmd_top_p,
            "/model": self.cmd_model,
            "/connect": self.cmd_connect,
            "/connections": self.cmd_connections,
            "/endpoint": self.cmd_connect,
            "/new": self.cmd_new,
            "/history": self.cmd_history,
            "/load": self.cmd_load,
            "/save": self.cmd_save,
            "/export": self.cmd_export,
            "/retry": self.cmd_retry,
            "/edit": self.cmd_edit,
            "/continue": self.cmd_continue,
            "/copy": self.cmd_copy,
            "/stats": self.cmd_stats,
            "/clear": lambda _: self.console.clear(),
            "/exit": self.cmd_exit,
            "/quit": self.cmd_exit,
        }

    def _note(self, message: str) -> None:
        self.console.print(message, style=OK, highlight=False)

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self._note(f"system prompt: {self.settings.system or '(none)'}")
            return
        system = None if arg.lower() == "none" else arg
        self.settings = replace(self.settings, system=system)
        self._note(f"system prompt {'set' if system else 'cleared'}")

    def _set_param(self, name: str, arg: str, integer: bool, low: float, high: float) -> None:
        label = name.replace("_", "-")
        if not arg:
            self._note(f"{label} = {getattr(self.settings.params, name)}")
            return
        try:
            value: float = int(arg) if integer else float(arg)
        except ValueError as exc:
            raise InputError(f"{label} must be a number, not '{arg}'") from exc
        if not low <= value <= high:
            shown = (str(int(low)), str(int(high))) if integer else (f"{low:g}", f"{high:g}")
            raise InputError(f"{label} must be between {shown[0]} and {shown[1]}")
        params = replace(self.settings.params, **{name: value})  # type: ignore[arg-type]
        self.settings = replace(self.settings, params=params)
        self._note(f"{label} = {value}")

    def cmd_temperature(self, arg: str) -> None:
        self._set_param("temperature", arg, False, 0.0, 2.0)

    def cmd_max_tokens(self, arg: str) -> None:
        self._set_param("max_tokens", arg, True, 1, 1_000_000)

    def cmd_top_p(self, arg: str) -> None:
        self._set_param("top_p", arg, False, 0.0, 1.0)

    def cmd_model(self, arg: str) -> None:
        models = self.client.list_models()
        if not arg:
            for name in models:
                mark = "*" if name == self.settings.model else " "
                self.console.print(f"{mark} {name}", highlight=False)
            return
        if arg not in models:
            raise InputError(f"the server has no model '{arg}': it serves {', '.join(models)}")
        self.settings = replace(self.settings, model=arg)
        self._note(f"model = {arg}")

    def cmd_connections(self, _: str) -> None:
        """The saved connections, the one in use marked, where each key comes from (never the key)."""
        store = ConnectionStore()
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("", "NAME", "URL", "API KEY", "WHAT"):
            table.add_column(column, overflow="fold")
        for conn in store.all():
            here = self.connection is None and conn.url == self.client.endpoint
            mark = "*" if conn.name == self.connection or here else ""
            table.add_row(mark, conn.name, conn.url, conn.key_source(), conn.describe())
        self.console.print(table)
        self.console.print(
            "/connect NAME switches · /connect URL --save NAME saves a server · "
            "`kaito connections rm NAME` forgets one",
            style=META,
            highlight=False,
        )

    def cmd_connect(self, arg: str) -> None:
        """``/connect NAME`` or ``/connect URL [--api-key-file F] [--save NAME]`` switches server.

        Without arguments it lists the saved connections. ``--save NAME`` keeps the server (and a
        key read from ``--api-key-file``) as a connection once it answers; with no URL it saves
        the server in use.
        """
        if not arg:
            self.cmd_connections("")
            return
        target, save_as, key_file = _connect_args(arg)
        store = ConnectionStore()
        if save_as is not None:
            check_name(save_as)
            if store.has(save_as):
                raise InputError(
                    f"connection {save_as!r} exists already: choose another name, or "
                    f"`kaito connections rm {save_as}` first"
                )
        key = read_key_file(Path(key_file), "--api-key-file") if key_file else None
        if target is None:
            if save_as is None:
                raise InputError("/connect needs a saved name or a URL: /connect http://HOST:PORT")
            saved = store.add(Connection(name=save_as, url=self.client.endpoint), key)
            self.connection = saved.name
            self._note(f"saved {saved.name} → {saved.url} (API key: {saved.key_source()})")
            return
        if target in store.names():
            saved = store.get(target)
            url, name = saved.url, saved.name
            key = key if key is not None else store.api_key(saved)
        elif "://" in target or ":" in target or "." in target or target == "localhost":
            url, name = check_url(target), None
        else:
            raise InputError(
                f"no saved connection {target!r}: saved are {', '.join(store.names())} "
                "(or give a URL: /connect http://HOST:PORT)"
            )
        client = ChatClient(url, api_key=key)
        health = client.health()
        if not health.ready:
            client.close()
            raise InputError(f"{health.detail}; still connected to {self.client.endpoint}")
        try:
            models = client.list_models()
        except ChatError:
            client.close()
            raise
        if save_as is not None:
            name = store.add(Connection(name=save_as, url=url), key).name
        self._opened.append(client)
        self.client = client
        self.connection = name
        model = self.settings.model if self.settings.model in models else (models[0] if models else None)
        self.settings = replace(self.settings, model=model)
        self._note(f"connected to {name or url} ({url}) · model = {model}")
        if save_as is not None:
            self._note(f"saved as {save_as}: `kaito chat --connection {save_as}` opens it")
        if model is not None and is_demo_model(model):
            self.console.print(demo_notice(model), style=META)

    def cmd_new(self, _: str) -> None:
        self.conversation = None
        self.messages = []
        self.turns = []
        self._note("new conversation")

    def cmd_history(self, arg: str) -> None:
        if arg:
            rows = [(hit.conversation, hit.snippet) for hit in self.store.search(arg)]
        else:
            rows = [(conv, "") for conv in self.store.list_conversations(limit=20)]
        if not rows:
            self._note("no conversations yet" if not arg else f"nothing matches '{arg}'")
            return
        table = Table(box=None, header_style="bold")
        table.add_column("id", style="blue", no_wrap=True)
        table.add_column("updated", no_wrap=True)
        table.add_column("msgs", justify="right")
        table.add_column("title")
        for conv, snippet in rows:
            title = Text(conv.title)
            if snippet:
                title.append("\n")
                title.append_text(_bold_marked(snippet))
            table.add_row(conv.id, short_time(conv.updated_at), str(conv.message_count), title)
        self.console.print(table)

    def cmd_load(self, arg: str) -> None:
        if not arg:
            raise InputError("/load needs a conversation id: /history lists them")
        conv = self.store.get(arg)
        messages = self.store.messages(conv.id)
        self.conversation = conv
        self.messages = messages
        self.save = True
        known = {k: v for k, v in conv.params.items() if k in ("temperature", "max_tokens", "top_p")}
        self.settings = replace(
            self.settings,
            system=conv.system_prompt or self.settings.system,
            params=replace(self.settings.params, **known),
        )
        self._note(f"resumed '{conv.title}' ({plural(len(messages), 'message')})")
        for i, msg in enumerate(messages):
            style = YOU if msg.role == "user" else BOT
            self.console.print(Text(f"{msg.role} · {short_time(msg.created_at)}", style=style))
            self.console.print(Markdown(msg.content or "*(no text)*"))
            label = finish_label(msg.finish_reason) if msg.role == "assistant" else None
            if msg.role == "user" and (i + 1 == len(messages) or messages[i + 1].role == "user"):
                label = "no reply: the chat ended before it came"
            if label:
                self.console.print(f"[{label}]", style=META, markup=False, highlight=False)
        replies = [m for m in messages if m.role == "assistant" and m.content]
        self.last_text = replies[-1].content if replies else ""

    def cmd_save(self, arg: str) -> None:
        if self.conversation is None:
            raise InputError("nothing to save yet: send a message first")
        if not arg:
            self._note(f"saved as '{self.conversation.title}' ({self.conversation.id})")
            return
        self.conversation = self.store.rename(self.conversation.id, arg)
        self._note(f"saved as '{self.conversation.title}' ({self.conversation.id})")

    def cmd_export(self, arg: str) -> None:
        if self.conversation is None:
            raise InputError("nothing to export yet: send a message first")
        parts = arg.split(maxsplit=1)
        fmt = "md"
        if parts and parts[0].lower() in ("md", "markdown", "json", "pdf"):
            fmt = format_for(parts[0]) or "md"
            parts = parts[1:]
        path = Path(parts[0]).expanduser() if parts else Path(f"conversation-{self.conversation.id}")
        if not parts:
            path = path.with_suffix(SUFFIXES[fmt])
        else:
            fmt = format_for(path.name) or fmt
        data = export(self.store, self.conversation.id, fmt)
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from exc
        self._note(f"exported to {path}")

    def cmd_retry(self, _: str) -> None:
        self._needs_saved("/retry")
        assert self.conversation is not None
        reply = self._last("assistant")
        self.store.rewind(self.conversation.id, reply.parent_id)
        self._refresh()
        self._reply(self.model())

    def cmd_edit(self, arg: str) -> None:
        self._needs_saved("/edit")
        assert self.conversation is not None
        question = self._last("user")
        if not arg:
            self.console.print(question.content, highlight=False, markup=False)
            raise InputError("give the new question: /edit TEXT (the old one and its replies stay)")
        self.store.add_message(self.conversation.id, "user", arg, parent_id=question.parent_id, branch=True)
        self._refresh()
        self._reply(self.model())

    def cmd_continue(self, _: str) -> None:
        self._needs_saved("/continue")
        assert self.conversation is not None
        reply = self._last("assistant")
        if reply.finish_reason not in ("length", "stopped", "error") or not reply.content:
            raise InputError("the last reply is complete: /retry writes another one")
        self.store.rewind(self.conversation.id, reply.parent_id)
        self._refresh()
        self._reply(self.model(), prefix=reply.content)

    def cmd_copy(self, _: str) -> None:
        if not self.last_text:
            raise InputError("no reply to copy yet")
        for program in CLIPBOARDS:
            if shutil.which(program[0]):
                try:
                    subprocess.run(program, input=self.last_text, text=True, check=True, timeout=5)
                except (OSError, subprocess.SubprocessError) as exc:
                    raise InputError(f"{program[0]} could not take the text: {exc}") from exc
                self._note(f"copied the last reply ({plural(len(self.last_text), 'character')})")
                return
        raise InputError(
            "no clipboard program found (wl-copy, xclip, xsel or pbcopy): install one, or /export to a file"
        )

    def cmd_stats(self, _: str) -> None:
        t = self.totals
        lines = [
            f"replies: {t.replies}",
            f"tokens: {t.prompt_tokens} prompt + {t.completion_tokens} completion",
        ]
        if t.mean_ttft_s is not None:
            lines.append(f"mean TTFT: {t.mean_ttft_s * 1000:.0f} ms")
        if t.mean_tokens_per_s is not None:
            lines.append(f"mean speed: {t.mean_tokens_per_s:.1f} tokens/s")
        if self.last is not None:
            lines.append(f"last reply: {self.last.summary()}")
        p = self.settings.params
        lines.append(
            f"model {self.settings.model} · temperature {p.temperature} · max-tokens {p.max_tokens}"
            f" · top-p {p.top_p}"
        )
        self.console.print("\n".join(lines), highlight=False)

    def cmd_exit(self, _: str) -> None:
        self.running = False


def _key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.text.endswith("\\"):
            buffer.delete_before_cursor(1)
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    return kb


def _connect_args(arg: str) -> tuple[str | None, str | None, str | None]:
    """``NAME|URL [--save NAME] [--api-key-file F]`` → (target, save as, key file)."""
    try:
        words = shlex.split(arg)
    except ValueError as exc:
        raise InputError(f"/connect {arg}: {exc}") from exc
    target: str | None = None
    options: dict[str, str | None] = {"--save": None, "--api-key-file": None}
    while words:
        word = words.pop(0)
        if word in options:
            if not words or words[0].startswith("--"):
                raise InputError(f"/connect: {word} needs a value, e.g. /connect URL --save NAME")
            options[word] = words.pop(0)
        elif word.startswith("--"):
            raise InputError(f"/connect: unknown option {word} (--save NAME, --api-key-file FILE)")
        elif target is None:
            target = word
        else:
            raise InputError(f"/connect takes one server, not {target!r} and {word!r}")
    return target, options["--save"], options["--api-key-file"]


def _bold_marked(snippet: str) -> Text:
    """A search snippet with its **matches** in bold."""
    text = Text(style=META)
    for i, part in enumerate(snippet.split("**")):
        text.append(part, style="bold" if i % 2 else "")
    return text


def banner(chat: TerminalChat, health: HealthStatus) -> Text:
    if not health.ready:
        return Text.assemble(
            ("pykaito chat", "bold"),
            (f" · {health.detail}\n", ERR),
            ("The history is open: /history, /load ID, /export. Sending needs a server: ", META),
            ("start one with `kaito up`, or `kaito connect WORKSPACE`.", META),
        )
    model = chat.model()
    parts = Text.assemble(
        ("pykaito chat", "bold"),
        (f" · {model} at {chat.client.endpoint}", ""),
        (f" ({chat.connection})\n" if chat.connection else "\n", ""),
        ("/help for commands · Esc Enter or a trailing \\ for a new line · ", META),
        ("Ctrl-C stops a reply · Ctrl-D leaves", META),
    )
    if is_demo_model(model):
        parts.append(f"\n{demo_notice(model)}", style=META)
    return parts


def ctrl_c_stops_replies() -> None:
    """Let Ctrl-C raise KeyboardInterrupt (which stops a reply) even if the parent ignored SIGINT.

    A program started in the background by a shell without job control (a script's ``cmd &``, some
    CI runners) inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt; the
    chat on its own terminal still owes its user a working Ctrl-C.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interactive(chat: TerminalChat, health: HealthStatus) -> int:
    ctrl_c_stops_replies()
    console = chat.console
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(data_dir() / INPUT_HISTORY)),
        key_bindings=_key_bindings(),
        multiline=True,
        prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
    )
    console.print(banner(chat, health))
    hinted = False
    while chat.running:
        try:
            line = session.prompt(HTML("<ansiblue><b>you</b></ansiblue> › "))
        except KeyboardInterrupt:
            if not hinted:
                console.print("(Ctrl-D or /exit leaves)", style=META)
                hinted = True
            continue
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            chat.command(text)
            continue
        try:
            chat.send(text)
        except ConversationGone as exc:
            chat._forget()
            console.print(str(exc), style=ERR, highlight=False)
        except (ChatError, HistoryError) as exc:
            console.print(str(exc), style=ERR, highlight=False)
    return 0


def piped(chat: TerminalChat, stdin: TextIO, stdout: TextIO) -> int:
    text = stdin.read().strip()
    if not text:
        raise InputError("nothing to send: pipe a message in, e.g. echo 'hello' | kaito chat")

    def write(reply: ChatReply) -> None:
        for piece in reply:
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        stdout.flush()

    chat.send(text, out=write)
    return 0


def run(
    endpoint: str | None = None,
    *,
    model: str | None = None,
    system: str | None = None,
    params: ChatParams | None = None,
    resume: str | None = None,
    api_key: str | None = None,
    save: bool | None = None,
    connection: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the chat; interactive when standard input is a terminal, one reply otherwise.

    Interactive chats are saved; a piped question only with ``save=True``. With the server
    down, the interactive chat still opens its history.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    is_tty = stdin.isatty()
    console = Console(file=stdout if is_tty else sys.stderr, highlight=False)
    with ChatClient(endpoint, api_key=api_key) as client:
        health = client.health()
        if not health.reachable and not is_tty:
            raise ChatError(health.detail)
        if health.reachable and not health.ready:
            with console.status(f"waiting for {client.endpoint} to load its model…"):
                health = client.wait_ready(timeout_s=600)
            if not health.ready:
                raise ChatError(f"{client.endpoint} did not become ready: {health.detail}")
        settings = ChatSettings(model=model, system=system, params=params or ChatParams())
        keep = is_tty if save is None else save
        chat = TerminalChat(client, HistoryStore(), settings, console, live=console.is_terminal, save=keep)
        chat.connection = connection
        if resume:
            chat.cmd_load(resume)
        try:
            return interactive(chat, health) if is_tty else piped(chat, stdin, stdout)
        finally:
            chat.close()
