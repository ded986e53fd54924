"""A real headless Chromium against a real daphne: sign in, chat, watch the reply stream,
see tool calls live, reload, stop, and follow the same stream from a second tab."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from django.db import connection

from chat.models import Message
from tests.servers import running_daphne

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def orm(query):
    """Playwright's sync API keeps an event loop running in this thread, where Django refuses
    synchronous ORM calls: run them in a worker thread instead."""

    def run():
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Start a conversation")).to_be_visible()


def test_user_signs_in_chats_and_sees_the_reply_stream_with_tool_calls(user, tmp_path, browser):
    with running_daphne(tmp_path, extra_env={"AGENTS_SCRIPTED_DELAY": "0.05"}) as server:
        page = browser.new_page()
        sign_in(page, server.http, user.email)
        page.get_by_role("button", name="Start chatting").click()
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")

        page.fill("textarea[name=content]", "What time is it?")
        page.keyboard.press("Enter")

        reply = page.locator("article.msg-assistant").last
        tool = reply.locator("details.tool")
        expect(tool.locator(".tool-name")).to_have_text("get_current_time")
        # Streaming: the text is visible while the reply is still marked as streaming.
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator("[data-role=body]")).to_contain_text("The tool")
        expect(reply).to_have_attribute("data-status", "completed", timeout=15000)
        expect(tool).to_have_class("tool tool-completed")
        expect(reply.locator("[data-role=usage]")).to_contain_text("tokens")
        expect(page.locator("textarea[name=content]")).to_have_value("")

        # A reload shows the whole conversation from the server.
        page.reload()
        expect(page.locator("article.msg-user")).to_have_text(["You What time is it?"], use_inner_text=True)
        expect(page.locator("article.msg-assistant [data-role=body]")).to_contain_text("The tool answered:")
        expect(page.locator("article.msg-assistant .tool-name")).to_have_text("get_current_time")

    assert orm(lambda: Message.objects.filter(role="assistant", status="completed").count()) == 1


def test_stop_keeps_the_partial_reply_and_the_second_tab_follows_the_stream(user, tmp_path, browser):
    with running_daphne(tmp_path) as server:
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, server.http, user.email)
        page.get_by_role("button", name="Start chatting").click()
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")
        other_tab = context.new_page()
        other_tab.goto(page.url)
        expect(other_tab.locator("[data-role=connection]")).to_have_text("Connected")

        page.fill("textarea[name=content]", "[[slow]] please tell me a long story about a lighthouse keeper and the sea")
        page.click("[data-role=send]")
        reply = page.locator("article.msg-assistant").last
        expect(reply.locator("[data-role=body]")).to_contain_text("You said")
        # The second tab sees the same reply streaming in.
        expect(other_tab.locator("article.msg-assistant [data-role=body]")).to_contain_text("You said")
        expect(other_tab.locator("article.msg-user")).to_contain_text("lighthouse keeper")

        page.click("[data-role=stop]")
        expect(reply).to_have_attribute("data-status", "cancelled")
        expect(other_tab.locator("article.msg-assistant")).to_have_attribute("data-status", "cancelled")
        expect(page.locator("[data-role=send]")).to_be_enabled()

        # The user can keep chatting after a stop.
        page.fill("textarea[name=content]", "Never mind, hello")
        page.keyboard.press("Enter")
        expect(page.locator("article.msg-assistant").last).to_have_attribute("data-status", "completed", timeout=15000)

    replies = orm(lambda: list(Message.objects.filter(role="assistant").order_by("created_at")))
    assert [m.status for m in replies] == ["cancelled", "completed"]
    stopped = replies[0]
    assert stopped.content.startswith("You said") and len(stopped.content) < 80
