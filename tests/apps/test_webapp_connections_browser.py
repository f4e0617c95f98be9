"""Saved connections in the web app, in a real headless Chromium: add, use, replace the key, remove."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from pykaito.apps.connections import KEYS_FILE, ConnectionStore
from tests.apps.browser import chromium, kaito_ui
from tests.apps.standin import Behaviour, standin_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
expect.set_options(timeout=60_000)  # two shared cores: a page can take a while

KEY = "sk-browser-9e41c07b3d"
NEW_KEY = "sk-browser-rotated-5a8f2e"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def wait_idle(page: Page) -> None:
    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0)


def input_values(page: Page) -> str:
    return str(
        page.evaluate("() => [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')")
    )


def test_add_use_rekey_and_remove_a_connection(browser: Browser, kaito_home: Path) -> None:
    log: list[str] = []
    with (
        standin_server(Behaviour(model="local-model")) as (local_url, _),
        standin_server(Behaviour(api_key=NEW_KEY, model="keyed-model")) as (keyed_url, keyed),
        kaito_ui(local_url, log) as url,
    ):
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("connected")).to_be_visible()
        sidebar.get_by_text("Connections", exact=True).click()

        # a URL that is not one: a clear error, nothing saved
        sidebar.get_by_label("Name", exact=True).fill("prod")
        sidebar.get_by_label("URL", exact=True).fill("ftp://nowhere")
        sidebar.get_by_label("API key", exact=True).fill(KEY)
        sidebar.get_by_role("button", name="Save and use").click()
        expect(sidebar.get_by_text("URL 'ftp://nowhere' is not valid")).to_be_visible()
        assert ConnectionStore().names() == ["local"]

        # fixed: saved and used at once (the server wants a key we have not given yet: 401)
        sidebar.get_by_label("URL", exact=True).fill(keyed_url)
        sidebar.get_by_role("button", name="Save and use").click()
        expect(sidebar.get_by_text(f"Saved prod ({keyed_url}).")).to_be_visible()
        expect(sidebar).to_contain_text(f"{keyed_url} (prod)")
        expect(sidebar.get_by_text(f"stored, ending …{KEY[-4:]}")).to_be_visible()
        expect(sidebar.get_by_label("API key", exact=True)).to_have_count(0)  # the edit form now
        expect(sidebar.get_by_label("New API key", exact=True)).to_have_value("")
        wait_idle(page)
        html = page.content()
        assert KEY not in html, html[max(0, html.find(KEY) - 600) : html.find(KEY) + 100]
        assert KEY not in input_values(page)

        # replace the key: the keyed server's model is listed and a message goes through
        sidebar.get_by_label("New API key", exact=True).fill(NEW_KEY)
        sidebar.get_by_role("button", name="Save and use").click()
        expect(sidebar.get_by_text("Saved prod")).to_be_visible()
        expect(sidebar.get_by_text(f"stored, ending …{NEW_KEY[-4:]}")).to_be_visible()
        sidebar.get_by_text("Settings", exact=True).click()
        expect(sidebar.get_by_role("combobox", name="Model")).to_have_value("keyed-model")
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("hello over there")
        box.press("Enter")
        expect(page.get_by_test_id("stChatMessage").nth(1)).to_contain_text("stand-in")
        wait_idle(page)
        assert keyed.requests[-1]["messages"][-1]["content"] == "hello over there"
        assert NEW_KEY not in page.content() and NEW_KEY not in input_values(page)
        store = ConnectionStore()
        assert store.api_key(store.get("prod")) == NEW_KEY

        # remove the connection in use: back to the local server
        wait_idle(page)
        sidebar.get_by_role("button", name=re.compile(r"Remove$")).click()
        expect(sidebar.get_by_text("Remove prod and its stored key?")).to_be_visible()
        wait_idle(page)
        # the confirming button (primary): the first one may still be on show for a moment
        sidebar.get_by_test_id("stBaseButton-primary").filter(has_text="Remove").click()
        expect(sidebar.get_by_text(f"Removed prod. The chat uses local ({local_url}) now.")).to_be_visible()
        expect(sidebar).to_contain_text(f"connected · {local_url}")
        expect(sidebar.get_by_role("combobox", name="Model")).to_have_value("local-model")
        page.close()
    assert ConnectionStore().names() == ["local"]
    assert NEW_KEY not in (kaito_home / KEYS_FILE).read_text()
    (output,) = log
    assert KEY not in output and NEW_KEY not in output
    for path in kaito_home.rglob("*"):
        if path.is_file() and path.name != KEYS_FILE:
            data = path.read_bytes()
            assert KEY.encode() not in data and NEW_KEY.encode() not in data, path


def test_the_generated_title_arrives_without_blocking_the_chat(
    browser: Browser, kaito_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITO_TITLES", "1")
    question = "How do octopuses change colour so fast? I saw one."
    log: list[str] = []
    behaviour = Behaviour(complete_text="Octopus Colour Tricks", complete_delay_s=6.0)
    with standin_server(behaviour) as (local_url, seen), kaito_ui(local_url, log) as url:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        expect(page.get_by_test_id("stSidebar").get_by_text("connected")).to_be_visible()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill(question)
        box.press("Enter")
        expect(page.get_by_test_id("stChatMessage").nth(1)).to_contain_text("stand-in")
        # the reply is done and the input back while the title is still on its way
        expect(box).to_be_enabled()
        heading = page.get_by_role("heading", level=3).first
        expect(heading).to_have_text("How do octopuses change colour so fast?")
        # then it shows, in the heading and the list, with no click
        expect(heading).to_have_text("Octopus Colour Tricks")
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_role("button", name="Octopus Colour Tricks")).to_be_visible()
        # and the chat goes on
        box.fill("And squid?")
        box.press("Enter")
        expect(page.get_by_test_id("stChatMessage")).to_have_count(4)
        expect(page.get_by_test_id("stChatMessage").nth(3)).to_contain_text("stand-in")
        page.close()
    assert len([r for r in seen.requests if not r.get("stream")]) == 1
    (output,) = log
    assert "Traceback" not in output
