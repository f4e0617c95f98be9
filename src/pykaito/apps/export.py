"""A conversation as Markdown, JSON or PDF, the same from both apps.

The branch on show is exported (edited questions and regenerated replies that were set aside
are not). The PDF is drawn with fpdf2, in DejaVu when the system has it (any script), else in
the PDF core fonts (Latin-1; other characters become ``?``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pykaito.apps.history import HistoryStore, Message, finish_label, short_time

if TYPE_CHECKING:
    from fpdf import FPDF

FORMATS = {"md": "Markdown", "json": "JSON", "pdf": "PDF"}
SUFFIXES = {"md": ".md", "json": ".json", "pdf": ".pdf"}
MIME = {"md": "text/markdown", "json": "application/json", "pdf": "application/pdf"}
_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))


def format_for(name: str) -> str | None:
    """``md``, ``markdown``, ``json``, ``pdf`` or a file name ending so → the format, else None."""
    lowered = name.lower()
    aliases = {"md": "md", "markdown": "md", "json": "json", "pdf": "pdf"}
    if lowered in aliases:
        return aliases[lowered]
    suffix = Path(lowered).suffix.lstrip(".")
    return aliases.get(suffix)


def export(store: HistoryStore, conversation_id: str, fmt: str) -> bytes:
    if fmt == "json":
        return to_json(store, conversation_id).encode()
    if fmt == "pdf":
        return to_pdf(store, conversation_id)
    return to_markdown(store, conversation_id).encode()


def to_json(store: HistoryStore, conversation_id: str) -> str:
    conv = store.get(conversation_id)
    document = {
        "conversation": asdict(conv),
        "messages": [asdict(m) for m in store.messages(conv.id)],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def to_markdown(store: HistoryStore, conversation_id: str) -> str:
    conv = store.get(conversation_id)
    lines = [f"# {conv.title}", ""]
    meta = [f"- Conversation: `{conv.id}`", f"- Started: {short_time(conv.created_at)}"]
    if conv.model:
        meta.append(f"- Model: `{conv.model}`")
    if conv.params:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(conv.params.items()))
        meta.append(f"- Settings: {settings}")
    lines += [*meta, ""]
    if conv.system_prompt:
        lines += ["## System", "", conv.system_prompt, ""]
    for msg in store.messages(conv.id):
        if msg.role == "system":
            lines += ["## System", "", msg.content, ""]
            continue
        heading = "You" if msg.role == "user" else "Assistant"
        lines += [f"## {heading} · {short_time(msg.created_at)}", "", msg.content, ""]
        stats = stats_line(msg)
        if stats:
            lines += [f"*{stats}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def stats_line(msg: Message) -> str:
    """``7 tokens · TTFT 125 ms · 20.0 tokens/s`` and why the reply ended, if not by itself."""
    if msg.role != "assistant":
        return ""
    parts = []
    if msg.completion_tokens is not None:
        parts.append(f"{msg.completion_tokens} tokens")
    if msg.ttft_s is not None:
        parts.append(f"TTFT {msg.ttft_s * 1000:.0f} ms")
    if msg.tokens_per_s is not None:
        parts.append(f"{msg.tokens_per_s:.1f} tokens/s")
    label = finish_label(msg.finish_reason)
    if label:
        parts.append(label)
    return " · ".join(parts)


def to_pdf(store: HistoryStore, conversation_id: str) -> bytes:
    from fpdf import FPDF

    conv = store.get(conversation_id)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_title(conv.title)
    pdf.set_creator("pykaito")
    body, mono = _fonts(pdf)
    pdf.add_page()
    text = _text_for(body)
    width = pdf.epw

    def para(value: str, size: float, style: str = "", family: str = body, height: float = 5.5) -> None:
        pdf.set_font(family, style, size)
        pdf.multi_cell(width, height, text(value), new_x="LMARGIN", new_y="NEXT")

    para(conv.title, 16, "B", height=8)
    meta = f"Conversation {conv.id} · started {short_time(conv.created_at)}"
    if conv.model:
        meta += f" · model {conv.model}"
    para(meta, 9)
    pdf.ln(3)
    if conv.system_prompt:
        para("System", 11, "B")
        para(conv.system_prompt, 10)
        pdf.ln(2)
    for msg in store.messages(conv.id):
        heading = {"user": "You", "assistant": "Assistant"}.get(msg.role, msg.role.capitalize())
        para(f"{heading} · {short_time(msg.created_at)}", 11, "B")
        for kind, chunk in _blocks(msg.content or "(no text)"):
            if kind == "code":
                pdf.set_fill_color(242, 242, 242)
                pdf.set_font(mono, "", 9)
                pdf.multi_cell(width, 4.5, text(chunk), fill=True, new_x="LMARGIN", new_y="NEXT")
            else:
                para(chunk, 10)
        stats = stats_line(msg)
        if stats:
            para(stats, 8)
        pdf.ln(3)
    return bytes(pdf.output())


def _fonts(pdf: FPDF) -> tuple[str, str]:
    """DejaVu Sans and Sans Mono where installed, else the core Helvetica and Courier."""
    for folder in _FONT_DIRS:
        names = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf")
        regular, bold, mono = (folder / name for name in names)
        if regular.is_file() and bold.is_file() and mono.is_file():
            pdf.add_font("DejaVu", "", str(regular))
            pdf.add_font("DejaVu", "B", str(bold))
            pdf.add_font("DejaVuMono", "", str(mono))
            return "DejaVu", "DejaVuMono"
    return "Helvetica", "Courier"


def _text_for(family: str) -> Callable[[str], str]:
    if family == "DejaVu":
        return str

    def latin1(value: str) -> str:
        return value.encode("latin-1", "replace").decode("latin-1")

    return latin1


def _blocks(content: str) -> list[tuple[str, str]]:
    """Prose and fenced code blocks, in order."""
    parts: list[tuple[str, str]] = []
    for i, chunk in enumerate(re.split(r"^```[^\n]*\n?", content, flags=re.MULTILINE)):
        chunk = chunk.rstrip("\n")
        if chunk.strip():
            parts.append(("code" if i % 2 else "text", chunk))
    return parts
