"""Two tabs of one user, in a real headless Chromium against real daphne: what one tab does
shows in the other at once, without a reload. A rename (sidebar entry, heading and window
title), a run starting and ending (the conversation moves to the top of the sidebar with a
"running" mark, which goes when the run ends), a new conversation's first run (it appears in
the other tab's sidebar), and feedback on a reply.

On the Postgres + Redis pass the two tabs talk to two daphne processes sharing the Redis
channel layer, as in production; on SQLite (in-memory layer, one process) to the same one."""

from __future__ import annotations

import contextlib

import pytest
from django.conf import settings
from playwright.sync_api import expect

from chat.models import Conversation
from chat.tests.factories import ConversationFactory
from tests.browser import DESKTOP, PHONE, assert_accessible, assert_layout, orm, screenshot, seed_history, sign_in
from tests.servers import running_daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def two_processes(tmp_path):
    """Two daphne processes when the suite runs on Redis; one serving both tabs otherwise
    (the in-memory channel layer reaches no other process). The diagnostics agent is on."""
    env = {"AGENTS_DIAGNOSTICS": "1"}
    with running_daphne(tmp_path, name="first", extra_env=env) as first:
        if not settings.REDIS_URL:
            yield first, first
            return
        with running_daphne(tmp_path, name="second", extra_env=env) as second:
            yield first, second


def _open(page, server, conversation) -> None:
    page.goto(f"{server.http}/c/{conversation.public_id}/")
    expect(page.locator("[data-role=connection]")).to_have_text("Connected")


def test_what_one_tab_does_shows_live_in_the_other_tabs_sidebar_and_page(user, tmp_path, browser):
    order = orm(lambda: seed_history(user, agent_key="assistant", agent_name="Assistant"))
    packing = orm(lambda: ConversationFactory(owner=user, title="Packing list for Oslo"))  # newest: first in the sidebar
    with two_processes(tmp_path) as (first, second):
        context = browser.new_context(viewport=DESKTOP)
        tab_a = context.new_page()
        sign_in(tab_a, first.http, user.email)  # the session cookie serves both ports of 127.0.0.1
        _open(tab_a, first, order)
        tab_b = context.new_page()
        _open(tab_b, second, packing)
        entries = tab_b.locator("[data-role=sidebar-list] li.conv")
        order_entry = tab_b.locator(f'li.conv[data-conversation="{order.public_id}"]')
        expect(entries.first).to_contain_text("Packing list for Oslo")

        # A rename in tab A: tab B's sidebar follows; renaming is not activity, the order stays.
        tab_a.get_by_label("Conversation actions").click()
        menu = tab_a.locator("[data-role=conversation-menu]")
        menu.get_by_label("Title").fill("Refund for the lamp")
        menu.get_by_role("button", name="Rename").click()
        expect(order_entry.locator(".conv-title")).to_have_text("Refund for the lamp")
        expect(order_entry.locator("summary")).to_have_attribute("aria-label", "Actions for “Refund for the lamp”")
        expect(entries.first).to_contain_text("Packing list for Oslo")

        # A run in tab A: in tab B that conversation goes to the top, marked running, until it ends.
        tab_a.locator("[data-role=composer] textarea").fill("[[stall]] Tell me a long story about lamps")
        tab_a.keyboard.press("Enter")
        expect(entries.first).to_have_attribute("data-conversation", str(order.public_id))
        expect(order_entry.locator("[data-role=running]")).to_be_visible()
        expect(order_entry.locator("[data-role=running]")).to_have_text("· running")
        assert_layout(tab_b)
        screenshot(tab_b, "live-running-in-other-tab-desktop")
        tab_a.get_by_role("button", name="Stop").click()
        expect(tab_a.locator("[data-role=notice]")).to_have_text("Stopped.")
        expect(order_entry.locator("[data-role=running]")).to_be_hidden()
        expect(entries.first).to_have_attribute("data-conversation", str(order.public_id))
        # The page's own entry in tab A shows the run too, and loses the mark when it ends.
        expect(tab_a.locator(f'li.conv[data-conversation="{order.public_id}"] [data-role=running]')).to_be_hidden()

        # Both tabs on the same conversation: a rename from tab A's sidebar retitles tab B's
        # page, and feedback in tab A shows in tab B.
        _open(tab_b, second, order)
        tab_a_entry = tab_a.locator(f'li.conv[data-conversation="{order.public_id}"]')
        tab_a_entry.get_by_label("Actions for “Refund for the lamp”").click()
        tab_a_entry.get_by_label("Title").fill("Lamp refund, done")
        tab_a_entry.get_by_role("button", name="Rename").click()
        expect(tab_b.locator(".chat-head h1")).to_have_text("Lamp refund, done")
        expect(tab_b).to_have_title("Lamp refund, done · Agents Chat")
        poem_in_a = tab_a.locator("article.msg-assistant").nth(1)
        poem_in_b = tab_b.locator("article.msg-assistant").nth(1)
        poem_in_a.get_by_role("button", name="Good reply").click()
        expect(poem_in_b.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
        poem_in_a.get_by_role("button", name="Good reply").click()  # taken back
        expect(poem_in_b.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "false")

        # A new chat in tab A: its first run brings it into tab B's sidebar, titled after its message.
        tab_a.get_by_role("button", name="New chat").click()
        expect(tab_a.locator("[data-role=connection]")).to_have_text("Connected")
        tab_a.locator("[data-role=composer] textarea").fill("Plan a weekend in Bergen")
        tab_a.keyboard.press("Enter")
        expect(entries.first).to_contain_text("Plan a weekend in Bergen")
        expect(entries.first.locator("[data-role=running]")).to_be_hidden()
        new_id = orm(lambda: str(Conversation.objects.get(title="Plan a weekend in Bergen").public_id))
        expect(entries.first).to_have_attribute("data-conversation", new_id)
        expect(tab_b.locator(f'li.conv[data-conversation="{new_id}"]')).to_have_count(1)
        screenshot(tab_b, "live-new-conversation-in-other-tab-desktop")

        # On a phone the drawer shows the same live mark.
        phone = context.new_page()
        phone.set_viewport_size(PHONE)
        _open(phone, second, packing)
        phone.get_by_role("button", name="Conversations").click()
        expect(phone.locator("[data-role=sidebar]")).to_be_in_viewport(ratio=1)  # slid all the way in
        tab_a.locator("[data-role=composer] textarea").fill("[[stall]] And a long story about fjords")
        tab_a.keyboard.press("Enter")
        phone_entry = phone.locator(f'li.conv[data-conversation="{new_id}"]')
        expect(phone_entry.locator("[data-role=running]")).to_be_visible()
        assert_layout(phone, composer=False)  # the open drawer covers the composer, as it should
        screenshot(phone, "live-running-in-other-tab-phone")
        tab_a.get_by_role("button", name="Stop").click()
        expect(phone_entry.locator("[data-role=running]")).to_be_hidden()
        context.close()


def test_a_tool_call_waiting_for_approval_marks_the_conversation_in_every_tab_until_decided(tmp_path, browser):
    from chat.tests.factories import UserFactory

    staff = orm(lambda: UserFactory(is_staff=True))  # the diagnostics agent (its refund tool needs approval) is staff-only
    refund = orm(lambda: ConversationFactory(owner=staff, agent_key="diagnostics", current_agent_name="Diagnostics", title="Refund A-7"))
    other = orm(lambda: ConversationFactory(owner=staff, title="Something else"))
    with two_processes(tmp_path) as (first, second):
        context = browser.new_context(viewport=DESKTOP)
        tab_a = context.new_page()
        sign_in(tab_a, first.http, staff.email)
        _open(tab_a, first, refund)
        tab_b = context.new_page()
        _open(tab_b, second, other)
        mark_in_a = tab_a.locator(f'li.conv[data-conversation="{refund.public_id}"] [data-role=running]')
        mark_in_b = tab_b.locator(f'li.conv[data-conversation="{refund.public_id}"] [data-role=running]')

        tab_a.locator("[data-role=composer] textarea").fill('[[tool:issue_refund {"order_number": "A-7", "amount": 3}]] refund')
        tab_a.keyboard.press("Enter")
        expect(tab_a.locator(".approval").get_by_role("button", name="Approve")).to_be_visible()
        expect(mark_in_b).to_have_text("· needs approval")
        expect(mark_in_a).to_have_text("· needs approval")
        assert_accessible(tab_b, "a sidebar entry waiting for approval")  # the warning colour is readable
        screenshot(tab_b, "live-needs-approval-in-other-tab-desktop")
        tab_b.reload()  # the server renders the same mark
        expect(mark_in_b).to_have_text("· needs approval")

        tab_a.locator(".approval").get_by_role("button", name="Reject").click()
        expect(tab_a.locator("article.msg-assistant").last).to_have_attribute("data-status", "completed")
        expect(mark_in_b).to_be_hidden()
        expect(mark_in_a).to_be_hidden()
        context.close()
