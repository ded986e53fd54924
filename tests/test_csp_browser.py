"""The pages work under the Content-Security-Policy: a real Chromium visits every page a user
and a staff member reach (the chat page streams a reply over the socket) and the browser
reports no violation (no inline script or style, nothing from another origin)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.tests.factories import UserFactory
from tests.browser import PASSWORD, orm, seed_history, sign_in
from tests.servers import running_daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Collects every violation the page reports, from before its first script runs.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI || 'inline'} at ${e.sourceFile || document.location.pathname}:${e.lineNumber}`));
"""


def _violations(page) -> list[str]:
    return page.evaluate("window.__csp || []")


def test_every_page_runs_under_the_csp_without_a_violation(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user, agent_key="assistant", agent_name="Assistant"))
    staff = orm(lambda: UserFactory(is_staff=True, is_superuser=True))
    seen: dict[str, list[str]] = {}
    with running_daphne(tmp_path) as server:
        context = browser.new_context()
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        console = []
        page.on("console", lambda message: console.append(message.text) if "Content Security Policy" in message.text else None)

        page.goto(f"{server.http}/accounts/login/")
        seen["/accounts/login/"] = _violations(page)
        sign_in(page, server.http, user.email)
        seen["/"] = _violations(page)

        page.goto(f"{server.http}/c/{conversation.public_id}/")
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")
        page.fill("textarea[name=content]", "What time is it?")
        page.keyboard.press("Enter")
        expect(page.locator("article.msg-assistant").last).to_have_attribute("data-status", "completed", timeout=15000)
        seen["/c/<id>/ (streamed a reply)"] = _violations(page)

        for path in ("/usage/", "/api-tokens/", "/tickets/", "/search/?q=order", "/accounts/password/change/"):
            page.goto(f"{server.http}{path}")
            seen[path] = _violations(page)
        context.close()

        context = browser.new_context()
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text) if "Content Security Policy" in message.text else None)
        page.goto(f"{server.http}/admin/login/")
        page.fill("input[name=username]", staff.username)
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit]")
        expect(page.locator("#site-name")).to_be_visible()
        for path in ("/admin/", "/admin/usage/usagerecord/report/?since=7d&by=user", "/admin/chat/conversation/",
                     f"/admin/chat/conversation/{conversation.pk}/change/"):
            page.goto(f"{server.http}{path}")
            seen[path] = _violations(page)
        context.close()

    assert {path: found for path, found in seen.items() if found} == {}, console
    assert console == []
