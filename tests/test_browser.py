"""A real headless Chromium against a real daphne: sign in, chat, watch the reply stream,
see tool calls live, reload, stop, and follow the same stream from a second tab."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Message
from tests.browser import (
    DESKTOP,
    PHONE,
    assert_layout,
    orm,
    screenshot,
    seed_history,
    sign_in,
)
from tests.servers import running_daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def user(db):
    """Staff: the diagnostics agent these pages use is staff-only."""
    from chat.tests.factories import UserFactory

    return UserFactory(is_staff=True)


# Records the length of the streaming reply's text each time it changes.
RECORD_STREAMING = """
window.__streamed = [];
new MutationObserver(() => {
  const body = document.querySelector('article.msg-assistant[data-status="streaming"] [data-role=body]');
  if (body && body.textContent.length && window.__streamed.at(-1) !== body.textContent.length) {
    window.__streamed.push(body.textContent.length);
  }
}).observe(document.querySelector('[data-role=messages]'), {subtree: true, childList: true, characterData: true, attributes: true});
"""


def test_user_signs_in_chats_and_sees_the_reply_stream_with_tool_calls(user, tmp_path, browser):
    with running_daphne(tmp_path, extra_env={"AGENTS_SCRIPTED_DELAY": "0.05"}) as server:
        page = browser.new_page()
        sign_in(page, server.http, user.email)
        page.get_by_role("button", name="Start chatting").click()
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")

        page.evaluate(RECORD_STREAMING)
        page.fill("textarea[name=content]", "What time is it?")
        page.keyboard.press("Enter")

        reply = page.locator("article.msg-assistant").last
        tool = reply.locator("details.tool")
        expect(tool.locator(".tool-name")).to_have_text("get_current_time")
        expect(reply).to_have_attribute("data-status", "completed", timeout=15000)
        # Token by token: the text grew in several steps while the reply was streaming.
        growth = page.evaluate("window.__streamed")
        assert len(growth) >= 3 and growth == sorted(growth), growth
        expect(tool).to_have_class("tool tool-completed")
        expect(reply.locator("[data-role=usage]")).to_contain_text("tokens")
        # The footer adds the reply to the conversation's totals, and the title follows the question.
        expect(page.locator("[data-role=conversation-usage]")).not_to_have_text("0 tokens · $0")
        expect(page.locator(".chat-head h1")).to_have_text("What time is it?")
        expect(page.locator("textarea[name=content]")).to_have_value("")

        # A reload shows the whole conversation from the server.
        page.reload()
        expect(page.locator("article.msg-user [data-role=body]")).to_have_text(["What time is it?"])
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


def test_reload_mid_reply_shows_it_continuing_and_tool_approval_from_the_page(user, tmp_path, browser):
    env = {"AGENTS_DIAGNOSTICS": "1", "AGENTS_SCRIPTED_DELAY": "0.01"}
    with running_daphne(tmp_path, extra_env=env) as server:
        page = browser.new_page()
        sign_in(page, server.http, user.email)
        page.get_by_label("Diagnostics").check()
        page.get_by_role("button", name="Start chatting").click()
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")

        # Reload in the middle of a reply: the page replays it and it keeps streaming.
        words = " ".join(f"w{n}" for n in range(40))  # 0.2 s a word: about 8 s of streaming
        page.fill("textarea[name=content]", f"[[slow]] {words}")
        page.keyboard.press("Enter")
        expect(page.locator("article.msg-assistant [data-role=body]")).to_contain_text("w0")
        page.reload()
        reply = page.locator("article.msg-assistant").last
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator("[data-role=body]")).to_contain_text("You said")
        expect(reply).to_have_attribute("data-status", "completed", timeout=20000)
        expect(reply.locator("[data-role=body]")).to_contain_text(words)

        # A tool that needs approval: approve it from the page.
        page.fill("textarea[name=content]", '[[tool:issue_refund {"order_number": "A-7", "amount": 3}]] refund')
        page.keyboard.press("Enter")
        approval = page.locator(".approval")
        expect(approval.get_by_role("button", name="Approve")).to_be_visible()
        expect(page.locator("[data-role=notice]")).to_contain_text("approval")
        page.reload()  # the pending approval survives a reload
        page.locator(".approval").get_by_role("button", name="Approve").click()
        last = page.locator("article.msg-assistant").last
        expect(last).to_have_attribute("data-status", "completed", timeout=15000)
        expect(last.locator(".tool-output")).to_contain_text("Refund of 3.00 USD issued for A-7")

        # Regenerate the last reply from the page.
        count = page.locator("article.msg").count()
        page.get_by_role("button", name="Regenerate").click()
        expect(page.locator("article.msg-assistant").last).to_have_attribute("data-status", "awaiting_approval", timeout=15000)
        expect(page.locator("article.msg")).to_have_count(count)


def test_reloading_a_conversation_with_history_shows_no_notice_and_keeps_the_composer_in_view(user, tmp_path, browser):
    """The bug users saw on every reopened conversation: each chat message repeated as a flash
    notice above the chat, pushing the composer below the fold."""
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env={"AGENTS_DIAGNOSTICS": "1"}) as server:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        sign_in(page, server.http, user.email)
        page.goto(f"{server.http}/c/{conversation.public_id}/")
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")
        # A tool call that waits for approval, live from the run service.
        page.fill("textarea[name=content]", '[[tool:issue_refund {"order_number": "A-7", "amount": 3}]] refund')
        page.keyboard.press("Enter")
        expect(page.locator(".approval").get_by_role("button", name="Approve")).to_be_visible()

        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.reload()
            expect(page.locator(".approval").get_by_role("button", name="Approve")).to_be_visible()
            expect(page.locator("article.msg")).to_have_count(6)
            expect(page.locator("article.msg-assistant .tool-name").first).to_have_text("get_current_time")
            expect(page.locator(".order-card")).to_be_visible()
            # No flash notice at all, and the chat and its composer fit the window.
            expect(page.locator("[data-role=flash]")).to_have_count(0)
            expect(page.get_by_text("What time is it, and where is my order A-7?")).to_have_count(1)
            expect(page.locator("[data-role=composer] textarea")).to_be_in_viewport()
            screenshot(page, f"reloaded-history-{name}")
            assert_layout(page)
        context.close()
