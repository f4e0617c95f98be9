"""The terminal chat: ``kaito chat``.

Interactive on a terminal (rich for streaming Markdown, prompt_toolkit for input with history
and multi-line entry), plain in a pipe: ``echo "hi" | kaito chat`` prints one reply and exits.
Conversations go to the same SQLite history as the web app.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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

from pykaito.apps.history import Conversation, HistoryError, HistoryStore, data_dir, short_time
from pykaito.client.chat import ChatClient, ChatError, ChatParams, ChatReply, ReplyStats, SessionTotals
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
| `/new` | start a new conversation |
| `/history [TEXT]` | recent conversations, or those containing TEXT |
| `/load ID` | resume a conversation (an id prefix is enough) |
| `/save TITLE` | name this conversation (it is saved as you go) |
| `/export [md\\|json] [PATH]` | write this conversation to a file |
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


class TerminalChat:
    """One chat session: the conversation, its settings and the session's totals."""

    def __init__(
        self,
        client: ChatClient,
        store: HistoryStore,
        settings: ChatSettings,
        console: Console,
        *,
        live: bool = True,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.console = console
        self.live = live
        self.conversation: Conversation | None = None
        self.turns: list[dict[str, str]] = []
        self.totals = SessionTotals()
        self.last: ReplyStats | None = None
        self.running = True

    # sending

    def model(self) -> str:
        if self.settings.model is None:
            self.settings = replace(self.settings, model=self.client.default_model())
        assert self.settings.model is not None
        return self.settings.model

    def send(self, text: str, out: Callable[[ChatReply], None] | None = None) -> ReplyStats | None:
        """Send one user message, stream the reply and save both; Ctrl-C stops the reply."""
        model = self.model()
        if self.conversation is None:
            self.conversation = self.store.create_conversation(
                model=model, system_prompt=self.settings.system, params=self.settings.params.as_dict()
            )
        conv = self.conversation
        self.store.update_settings(
            conv.id, model=model, system_prompt=self.settings.system, params=self.settings.params.as_dict()
        )
        self.store.add_message(conv.id, "user", text)
        self.turns.append({"role": "user", "content": text})
        chat = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        reply: ChatReply | None = None
        stopped = False
        try:
            reply = self.client.stream_chat([*chat, *self.turns], self.settings.params, model=model)
            (out or self._render)(reply)
        except KeyboardInterrupt:
            stopped = True
        finally:
            if reply is not None:
                reply.close()
        if stopped:
            self.console.print("[stopped]", style=META, markup=False, highlight=False)
        if reply is None or not reply.text:
            return None
        stats = reply.stats
        assert stats is not None
        self.store.add_message(
            conv.id, "assistant", reply.text, model=model, params=self.settings.params.as_dict(), stats=stats
        )
        self.turns.append({"role": "assistant", "content": reply.text})
        self.totals.add(stats)
        self.last = stats
        return stats

    def _render(self, reply: ChatReply) -> None:
        self.console.print(Text("assistant", style=BOT))
        if not self.live:
            for piece in reply:
                self.console.file.write(piece)
                self.console.file.flush()
            self.console.file.write("\n")
        else:
            with Live(Markdown(""), console=self.console, refresh_per_second=12) as live:
                for _ in reply:
                    live.update(Markdown(reply.text))
                live.update(Markdown(reply.text))
        if reply.stats is not None:
            self.console.print(reply.stats.summary(), style=META, highlight=False)

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
        except (InputError, HistoryError, ChatError) as exc:
            self.console.print(str(exc), style=ERR, highlight=False)

    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {
            "/help": lambda _: self.console.print(Markdown(HELP)),
            "/system": self.cmd_system,
            "/temperature": self.cmd_temperature,
            "/max-tokens": self.cmd_max_tokens,
            "/top-p": self.cmd_top_p,
            "/model": self.cmd_model,
            "/new": self.cmd_new,
            "/history": self.cmd_history,
            "/load": self.cmd_load,
            "/save": self.cmd_save,
            "/export": self.cmd_export,
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

    def cmd_new(self, _: str) -> None:
        self.conversation = None
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
            title = f"{conv.title}\n[dim]{snippet}[/]" if snippet else conv.title
            table.add_row(conv.id, short_time(conv.updated_at), str(conv.message_count), title)
        self.console.print(table)

    def cmd_load(self, arg: str) -> None:
        if not arg:
            raise InputError("/load needs a conversation id: /history lists them")
        conv = self.store.get(arg)
        messages = self.store.messages(conv.id)
        self.conversation = conv
        self.turns = [m.as_chat() for m in messages if m.role in ("user", "assistant")]
        known = {k: v for k, v in conv.params.items() if k in ("temperature", "max_tokens", "top_p")}
        self.settings = replace(
            self.settings,
            system=conv.system_prompt or self.settings.system,
            params=replace(self.settings.params, **known),
        )
        self._note(f"resumed '{conv.title}' ({len(messages)} messages)")
        for msg in messages:
            style = YOU if msg.role == "user" else BOT
            self.console.print(Text(f"{msg.role} · {short_time(msg.created_at)}", style=style))
            self.console.print(Markdown(msg.content))

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
        if parts and parts[0].lower() in ("md", "markdown", "json"):
            fmt = "json" if parts[0].lower() == "json" else "md"
            parts = parts[1:]
        path = Path(parts[0]).expanduser() if parts else Path(f"conversation-{self.conversation.id}.{fmt}")
        if path.suffix.lower() == ".json":
            fmt = "json"
        conv_id = self.conversation.id
        text = self.store.export_json(conv_id) if fmt == "json" else self.store.export_markdown(conv_id)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}") from exc
        self._note(f"exported to {path}")

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


def interactive(chat: TerminalChat) -> int:
    console = chat.console
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(data_dir() / INPUT_HISTORY)),
        key_bindings=_key_bindings(),
        multiline=True,
        prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
    )
    console.print(
        Text.assemble(
            ("pykaito chat", "bold"),
            (f" · {chat.model()} at {chat.client.endpoint}\n", ""),
            ("/help for commands · Esc Enter or a trailing \\ for a new line · ", META),
            ("Ctrl-C stops a reply · Ctrl-D leaves", META),
        )
    )
    while chat.running:
        try:
            line = session.prompt(HTML("<ansiblue><b>you</b></ansiblue> › "))
        except KeyboardInterrupt:
            console.print("(Ctrl-D or /exit leaves)", style=META)
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
        except ChatError as exc:
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
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the chat; interactive when standard input is a terminal, one reply otherwise."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    is_tty = stdin.isatty()
    console = Console(file=stdout if is_tty else sys.stderr, highlight=False)
    client = ChatClient(endpoint)
    health = client.health()
    if not health.reachable:
        client.close()
        raise ChatError(health.detail)
    if not health.ready:
        with console.status(f"waiting for {client.endpoint} to load its model…"):
            health = client.wait_ready(timeout_s=600)
        if not health.ready:
            raise ChatError(f"{client.endpoint} did not become ready: {health.detail}")
    settings = ChatSettings(model=model, system=system, params=params or ChatParams())
    chat = TerminalChat(client, HistoryStore(), settings, console, live=console.is_terminal)
    try:
        if resume:
            chat.cmd_load(resume)
        return interactive(chat) if is_tty else piped(chat, stdin, stdout)
    finally:
        client.close()
