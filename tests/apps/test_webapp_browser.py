"""The web app in a real headless Chromium, started with `kaito ui` against the real runtime."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from pykaito.apps.history import HistoryStore
from tests.apps.standin import Behaviour, standin_server
from tests.netutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
expect.set_options(timeout=60_000)  # two shared cores: a page can take a while

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def kaito_ui(endpoint: str) -> Iterator[str]:
    """`kaito ui` in a child process on a free port (its KAITO_HOME is the test's)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pykaito.cli.main", "ui", "--endpoint", endpoint, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kaito ui did not start"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"web app: {url}" in output
    assert "stopped" in output


@pytest.fixture
def ui_url(runtime_url: str, kaito_home: Path) -> Iterator[str]:
    with kaito_ui(runtime_url) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


WATCH_STREAMING = """() => {
    window.__streaming = [];
    new MutationObserver(() => {
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


def test_chat_in_the_browser(ui_url: str, browser: Browser, tmp_path: Path) -> None:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(ui_url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("connected")).to_be_visible()

    # keep the reply short: Settings → Max tokens
    sidebar.get_by_text("Settings").click()
    max_tokens = sidebar.get_by_label("Max tokens")
    max_tokens.fill("32")
    max_tokens.press("Enter")
    expect(max_tokens).to_have_value("32")

    # record every state of the reply while it streams
    page.evaluate(WATCH_STREAMING)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("Hello! Tell me a fun fact about octopuses.")
    box.press("Enter")
    messages = page.get_by_test_id("stChatMessage")
    reply = messages.nth(1)
    expect(reply).to_contain_text("tokens/s", timeout=120_000)
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

    store = HistoryStore()
    (conv,) = store.list_conversations()
    saved = store.messages(conv.id)[1]
    assert saved.completion_tokens is not None and 0 < saved.completion_tokens <= 32
    assert saved.params is not None and saved.params["max_tokens"] == 32
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
    with page.expect_download() as download_info:
        page.get_by_test_id("stSidebar").get_by_role("button", name="Markdown").click()
    path = tmp_path / "export.md"
    download_info.value.save_as(path)
    text = path.read_text()
    assert text.startswith(f"# {conv.title}")
    assert "Hello! Tell me a fun fact about octopuses." in text
    assert saved.content.strip() in text


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
