"""The web app in a real headless Chromium, started with `kaito ui` against the real runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from pykaito.apps.history import HistoryStore
from tests.apps.browser import chromium, kaito_ui
from tests.apps.standin import Behaviour, standin_server
from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
expect.set_options(timeout=60_000)  # two shared cores: a page can take a while


@pytest.fixture
def ui_url(runtime_url: str, kaito_home: Path) -> Iterator[str]:
    with kaito_ui(runtime_url) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


WATCH_STREAMING = """() => {
    window.__streaming = [];
    window.__inputs = 0;
    new MutationObserver(() => {
        const inputs = document.querySelectorAll('[data-testid="stChatInputTextArea"]').length;
        window.__inputs = Math.max(window.__inputs, inputs);
        const msgs = document.querySelectorAll('[data-testid="stChatMessage"]');
        const box = document.querySelector('[data-testid="stChatInputTextArea"]');
        if (msgs.length < 2) return;
        const text = msgs[msgs.length - 1].innerText;
        const last = window.__streaming[window.__streaming.length - 1];
        if (text.includes('▌') && (!last || last.text !== text)) {
            window.__streaming.push({text: text, disabled: box ? box.disabled : null});
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def wait_idle(page: Page) -> None:
    """Until no script run is in progress (Streamlit's running indicator is gone)."""
    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0)


def test_chat_in_the_browser(ui_url: str, browser: Browser, tmp_path: Path) -> None:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(ui_url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("connected")).to_be_visible()

    # keep the reply short: Settings → Max tokens
    sidebar.get_by_text("Settings").click()
    max_tokens = sidebar.get_by_label("Max tokens")
    max_tokens.fill("16")
    max_tokens.press("Enter")
    expect(max_tokens).to_have_value("16")

    # record every state of the reply while it streams
    page.evaluate(WATCH_STREAMING)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("Hello! Tell me a fun fact about octopuses.")
    box.press("Enter")
    messages = page.get_by_test_id("stChatMessage")
    reply = messages.nth(1)
    expect(reply).to_contain_text("tokens/s", timeout=360_000)  # the real model, on a busy machine
    expect(reply).to_contain_text("TTFT")
    expect(reply).not_to_contain_text("▌")
    expect(box).to_be_enabled()
    expect(sidebar).to_contain_text("Session: 1 reply")
    # it streamed: the reply grew under a cursor, with the input disabled meanwhile
    seen = page.evaluate("window.__streaming")
    texts = [state["text"] for state in seen]
    assert len(set(texts)) >= 2, seen
    assert all(state["disabled"] for state in seen), seen
    assert len(texts[-1]) > len(texts[0])
    # one chat input at every moment, reruns included
    assert page.evaluate("window.__inputs") == 1

    store = HistoryStore()
    (conv,) = store.list_conversations()
    saved = store.messages(conv.id)[1]
    assert saved.completion_tokens is not None and 0 < saved.completion_tokens <= 16
    assert saved.params is not None and saved.params["max_tokens"] == 16
    first_words = saved.content.split()[0]
    expect(reply).to_contain_text(first_words)

    # reload: the conversation is in the sidebar and resumes
    page.reload()
    conv_button = page.get_by_test_id("stSidebar").get_by_role("button", name=conv.title)
    expect(conv_button).to_be_visible()
    page.get_by_test_id("stSidebar").get_by_role("button", name="New chat").click()
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)
    conv_button.click()
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)

    # export as Markdown through a real download
    page.get_by_test_id("stSidebar").get_by_text("This conversation").click()
    wait_idle(page)
    with page.expect_download() as download_info:
        page.get_by_test_id("stSidebar").get_by_role("button", name="Markdown").click()
    path = tmp_path / "export.md"
    download_info.value.save_as(path)
    text = path.read_text()
    assert text.startswith(f"# {conv.title}")
    assert "Hello! Tell me a fun fact about octopuses." in text
    assert saved.content.strip() in text

    # and as a PDF
    wait_idle(page)
    with page.expect_download() as download_info:
        page.get_by_test_id("stSidebar").get_by_role("button", name="PDF").click()
    pdf = tmp_path / "export.pdf"
    download_info.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_down_page_reconnects_and_stop_keeps_the_partial_reply(browser: Browser, kaito_home: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with kaito_ui(endpoint) as url:
        page = browser.new_page()
        page.goto(url)
        expect(page.get_by_text(f"Cannot reach {endpoint}")).to_be_visible()
        expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()
        slow = Behaviour(words=tuple(f" word{i}" for i in range(400)), delay_s=0.02)
        with standin_server(slow, port=port):
            # no click, no reload: the page notices the server and opens the chat
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_enabled(timeout=30_000)
            expect(page.get_by_test_id("stSidebar")).to_contain_text("connected")
            expect(page.get_by_text(f"Cannot reach {endpoint}")).to_have_count(0)

            # Stop ends a reply mid-way; what arrived is kept in the history
            box.fill("Talk for a long time.")
            box.press("Enter")
            reply = page.get_by_test_id("stChatMessage").nth(1)
            expect(reply).to_contain_text("word5")
            expect(box).to_be_disabled()
            page.get_by_role("button", name="Stop").click()
            expect(box).to_be_enabled()
            store = HistoryStore()
            deadline = time.monotonic() + 30
            while not store.list_conversations() or len(store.messages(store.list_conversations()[0].id)) < 2:
                assert time.monotonic() < deadline, "the stopped reply was not saved"
                time.sleep(0.2)
            (conv,) = store.list_conversations()
            stopped = store.messages(conv.id)[1]
            assert stopped.finish_reason == "stopped"
            assert stopped.content.startswith(" word0 word1 word2 word3 word4 word5")
            assert stopped.completion_tokens is not None and 6 <= stopped.completion_tokens < 400


def test_a_click_before_the_first_token_sends_once(browser: Browser, kaito_home: Path) -> None:
    """Stop while the model still reads the prompt: one request, one stopped reply, the input back."""
    slow_start = Behaviour(first_delay_s=4.0, words=(" late", " words"))
    with standin_server(slow_start) as (endpoint, behaviour), kaito_ui(endpoint) as url:
        page = browser.new_page()
        page.goto(url)
        page.evaluate(WATCH_STREAMING)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_enabled()
        box.fill("Are you there?")
        box.press("Enter")
        expect(page.get_by_text("thinking…")).to_be_visible()
        page.get_by_role("button", name="Stop").click()
        expect(box).to_be_enabled()
        reply = page.get_by_test_id("stChatMessage").nth(1)
        expect(reply).to_contain_text("stopped")
        expect(reply).to_contain_text("no text arrived")
        # a second send would have run before the input came back: there was none
        assert len(behaviour.requests) == 1, behaviour.requests
        store = HistoryStore()
        (conv,) = store.list_conversations()
        assert [(m.role, m.finish_reason) for m in store.messages(conv.id)] == [
            ("user", None),
            ("assistant", "stopped"),
        ]
        expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
        assert page.evaluate("window.__inputs") == 1


def seed_history(count: int) -> str:
    store = HistoryStore()
    for i in range(count):
        conv = store.create_conversation()
        store.add_message(conv.id, "user", f"Question number {i} about Kubernetes GPU sizing")
        store.add_message(conv.id, "assistant", f"Answer {i}.")
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "Markdown table of three GPUs with their memory, please.")
    store.add_message(
        conv.id,
        "assistant",
        "| GPU | memory |\n|---|---|\n| T4 | 16 GiB |\n| A100 | 80 GiB |\n| H100 | 80 GiB |\n\n"
        "```python\nprint('a long line of code that should scroll inside its block, not the page')\n```",
        finish_reason="length",
    )
    return conv.id


SIDEBAR_OPEN = """() => {
    const bar = document.querySelector('[data-testid="stSidebar"]');
    if (!bar) return false;
    const box = bar.getBoundingClientRect();
    if (box.left < 0 || box.width < 200) return false;
    // the same place twice in a row: the slide-in is over
    const last = window.__sidebarLeft;
    window.__sidebarLeft = box.left;
    return last === box.left;
}"""


@pytest.mark.parametrize("width", [1400, 390])
def test_layout_at_desktop_and_phone_width(ui_url: str, browser: Browser, width: int, tmp_path: Path) -> None:
    conv_id = seed_history(40)
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{ui_url}/?c={conv_id}")
    messages = page.get_by_test_id("stChatMessage")
    expect(messages).to_have_count(2)
    expect(messages.nth(1)).to_contain_text("cut at the max-tokens limit")
    expect(page.get_by_role("button", name="Continue")).to_be_visible()
    # nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shots = Path(os.environ.get("KAITO_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"chat-{width}.png"))
    if width < 640:  # the sidebar starts closed on a phone; open it and let it slide in
        page.get_by_test_id("stExpandSidebarButton").click()
    page.wait_for_function(SIDEBAR_OPEN)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("connected")).to_be_visible()
    # settings and the current conversation are in reach above a long list
    for label in ("Settings", "This conversation", "Search"):
        box = sidebar.get_by_text(label, exact=True).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["y"] + box["height"] < 900, (label, box)
    listed = sidebar.get_by_role("button", name="Question number 39")
    expect(listed).to_be_visible()
    label_box = listed.bounding_box()
    assert label_box is not None and label_box["x"] + label_box["width"] <= width
    page.screenshot(path=str(shots / f"sidebar-{width}.png"))
