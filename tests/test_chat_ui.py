"""The chat page as people use it, in a real headless Chromium against a real daphne: the
sidebar (new chat, load more, rename, search, delete), export, feedback, code and copy buttons,
the keyboard, the phone layout, light and dark themes, and accessibility (axe-core).

Every test saves screenshots into var/screenshots/ (git-ignored) and checks the layout facts a
person would notice: nothing scrolls sideways, the composer is in the window and uncovered."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat.models import Conversation, Feedback
from tests.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    SMALL_PHONE,
    assert_accessible,
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


DIAGNOSTICS = {"AGENTS_DIAGNOSTICS": "1"}


def _older_conversations(user, count: int) -> None:
    rows = Conversation.objects.bulk_create(
        Conversation(owner=user, agent_key="assistant", title=f"Older chat {n:02d}", current_agent_name="Assistant")
        for n in range(count)
    )
    for n, row in enumerate(rows):
        Conversation.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(days=1, minutes=count - n))


def _open(page, server, conversation) -> None:
    page.goto(f"{server.http}/c/{conversation.public_id}/")
    expect(page.locator("[data-role=connection]")).to_have_text("Connected")


def test_sidebar_loads_more_renames_searches_deletes_and_starts_a_new_chat(user, tmp_path, browser):
    orm(lambda: _older_conversations(user, 34))
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = browser.new_page(viewport=DESKTOP)
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)
        sidebar = page.locator("[data-role=sidebar]")
        items = sidebar.locator("[data-role=sidebar-list] .conv-link")

        # Newest activity first, a page at a time; "Load more" fetches the rest.
        expect(items).to_have_count(30)
        expect(items.first).to_contain_text("Order A-7 and a refund")
        expect(items.first).to_have_attribute("aria-current", "page")
        sidebar.get_by_role("link", name="Load more").click()
        expect(items).to_have_count(35)
        expect(items.last).to_contain_text("Older chat 00")
        expect(sidebar.get_by_role("link", name="Load more")).to_have_count(0)

        # Rename from the header's menu: the header, the sidebar and the window title follow.
        page.get_by_label("Conversation actions").click()
        menu = page.locator("[data-role=conversation-menu]")
        menu.get_by_label("Title").fill("Refund for the lamp")
        menu.get_by_role("button", name="Rename").click()
        expect(page.locator(".chat-head h1")).to_have_text("Refund for the lamp")
        expect(items.first).to_contain_text("Refund for the lamp")
        expect(page).to_have_title("Refund for the lamp · Agents Chat")
        assert orm(lambda: Conversation.objects.get(pk=conversation.pk).title) == "Refund for the lamp"
        # A blank title is refused with a message, and nothing changes.
        page.get_by_label("Conversation actions").click()
        menu.get_by_label("Title").fill("   ")
        menu.get_by_label("Title").evaluate("input => input.removeAttribute('required')")
        menu.get_by_role("button", name="Rename").click()
        expect(menu.locator("[data-role=rename-error]")).to_contain_text("needs a title")
        page.keyboard.press("Escape")

        # Search titles and message text; a hit opens the conversation at that message.
        search = sidebar.get_by_role("searchbox", name="Search conversations")
        search.fill("lighthouses")
        hits = sidebar.locator("[data-role=search-list] .conv-link")
        expect(hits).to_have_count(1)
        expect(hits.first.locator("mark")).to_have_text("lighthouses")
        screenshot(page, "sidebar-search-desktop")
        hits.first.click()
        target = page.locator("article.msg.highlighted")
        expect(target).to_contain_text("a short poem about lighthouses")
        expect(target).to_be_in_viewport()

        # Esc in the search box brings the list back.
        search.press("Escape")
        expect(hits).to_have_count(0)
        expect(items.first).to_be_visible()

        # Delete from the sidebar asks first; dismissing keeps the conversation.
        doomed = sidebar.locator("li.conv", has_text="Older chat 29")
        doomed.get_by_label("Actions for “Older chat 29”").click()
        page.once("dialog", lambda dialog: dialog.dismiss())
        doomed.get_by_role("button", name="Delete").click()
        assert orm(lambda: Conversation.objects.filter(title="Older chat 29").exists())
        page.once("dialog", lambda dialog: dialog.accept())
        doomed.get_by_role("button", name="Delete").click()
        expect(page.locator("[data-role=flash]")).to_contain_text("Deleted “Older chat 29”.")
        expect(page).to_have_url(f"{server.http}/c/{conversation.public_id}/")
        assert not orm(lambda: Conversation.objects.filter(title="Older chat 29").exists())
        assert_layout(page)

        # New chat: the same agent, at once.
        sidebar.get_by_role("button", name="New chat").click()
        expect(page.locator(".chat-head h1")).to_have_text("New conversation")
        expect(page.locator(".chat-head .meta")).to_contain_text("Diagnostics")
        newest = orm(lambda: Conversation.objects.filter(owner=user).order_by("-created_at").first())
        assert newest.agent_key == "diagnostics" and page.url.endswith(f"/c/{newest.public_id}/")


def test_export_downloads_markdown_and_json_from_the_page(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = browser.new_page(viewport=DESKTOP, accept_downloads=True)
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)

        downloaded = {}
        for fmt, label in (("md", "Export as Markdown"), ("json", "Export as JSON")):
            page.get_by_label("Conversation actions").click()
            with page.expect_download() as info:
                page.get_by_role("link", name=label).click()
            download = info.value
            assert download.suggested_filename.startswith("order-a-7-and-a-refund-")
            assert download.suggested_filename.endswith(f".{fmt}")
            downloaded[fmt] = Path(download.path()).read_text()
            page.keyboard.press("Escape")

    markdown = downloaded["md"]
    assert markdown.startswith("# Order A-7 and a refund")
    assert "**Tool `get_current_time`** (completed)" in markdown and "*Handed off to Order Status.*" in markdown
    assert "def refund(order: str, amount: float) -> str:" in markdown
    data = json.loads(downloaded["json"])
    reply = data["messages"][1]
    assert [a["name"] for a in reply["activity"] if a["kind"] == "tool"] == ["get_current_time", "lookup_order"]
    assert reply["structured"]["type"] == "OrderStatus" and reply["usage"]["total_tokens"] == 49


def test_feedback_from_the_page_is_saved_changed_and_kept_after_reload(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = browser.new_page(viewport=DESKTOP)
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)
        reply = page.locator("article.msg-assistant").last
        up = reply.get_by_role("button", name="Good reply")
        down = reply.get_by_role("button", name="Bad reply")

        up.click()
        expect(up).to_have_attribute("aria-pressed", "true")
        expect(reply.locator("[data-role=feedback-status]")).to_have_text("Thanks for your feedback.")
        # The comment box opens after a thumb; a comment goes with the rating.
        comment = reply.get_by_label("Comment on this reply")
        expect(comment).to_be_visible()
        down.click()
        expect(down).to_have_attribute("aria-pressed", "true")
        expect(up).to_have_attribute("aria-pressed", "false")
        comment.fill("The poem does not rhyme.")
        reply.get_by_role("button", name="Send").click()
        expect(reply.locator("[data-role=feedback-status]")).to_have_text("Thanks, comment saved.")
        stored = orm(lambda: list(Feedback.objects.values_list("rating", "comment")))
        assert stored == [("down", "The poem does not rhyme.")]
        assert page.url.endswith(f"/c/{conversation.public_id}/")  # fetch(): the page never reloaded
        screenshot(page, "feedback-desktop")

        page.reload()
        reply = page.locator("article.msg-assistant").last
        expect(reply.get_by_role("button", name="Bad reply")).to_have_attribute("aria-pressed", "true")
        reply.get_by_text("Edit comment").click()
        expect(reply.get_by_label("Comment on this reply")).to_have_value("The poem does not rhyme.")
        # Pressing the chosen thumb again takes the feedback back.
        reply.get_by_role("button", name="Bad reply").click()
        expect(reply.get_by_role("button", name="Bad reply")).to_have_attribute("aria-pressed", "false")
        expect(reply.locator("[data-role=feedback-status]")).to_have_text("Feedback removed.")
        assert orm(lambda: Feedback.objects.count()) == 0


def test_code_is_highlighted_and_copy_buttons_copy_code_and_replies(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        context = browser.new_context(viewport=DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.http)
        page = context.new_page()
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)

        block = page.locator(".code-block").first
        expect(block.locator(".code-lang")).to_have_text("python")
        expect(block.locator("pre.highlight span.k").first).to_have_text("def")
        # Highlighting comes from the app's own stylesheet: keywords are coloured, not plain ink.
        keyword = block.locator("span.k").first.evaluate("el => getComputedStyle(el).color")
        ink = page.locator(".who").first.evaluate("el => getComputedStyle(el).color")
        assert keyword != ink
        expect(page.locator(".markdown table th").first).to_have_text("Item")

        block.get_by_role("button", name="Copy python code").click()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied.startswith("def refund(order: str, amount: float) -> str:") and "<span" not in copied
        expect(page.locator("[data-role=announcer]")).to_contain_text("Copied to the clipboard.")

        block.scroll_into_view_if_needed()
        screenshot(page, "code-and-copy-desktop")
        poem = page.locator("article.msg-assistant").last
        poem.get_by_role("button", name="Copy reply").click()
        assert page.evaluate("navigator.clipboard.readText()").startswith("A lamp that turns above the foam,")
        context.close()


def test_keyboard_sends_adds_lines_stops_with_escape_and_never_yanks_the_scroll(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 640})
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)
        composer = page.locator("textarea[name=content]")
        expect(composer).to_be_focused()

        # Shift+Enter is a new line; Enter sends.
        composer.type("First line")
        page.keyboard.press("Shift+Enter")
        words = " ".join(f"word{n}." for n in range(60))  # 0.2 s a word with [[slow]]
        composer.type(f"[[slow]] {words}")
        expect(composer).to_have_value(f"First line\n[[slow]] {words}")
        page.keyboard.press("Enter")
        reply = page.locator("article.msg-assistant").last
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator("[data-role=body]")).to_contain_text("word3.")

        # Scrolled up to read: the stream does not pull the page down; a button offers the way back.
        messages = page.locator("[data-role=messages]")
        messages.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        jump = page.get_by_role("button", name="Jump to latest")
        expect(jump).to_be_visible()
        expect(reply.locator("[data-role=body]")).to_contain_text("word8.")
        assert messages.evaluate("el => el.scrollTop") == 0
        assert_layout(page)
        screenshot(page, "jump-to-latest-desktop")
        jump.click()
        expect(jump).to_be_hidden()
        assert messages.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 40
        expect(composer).to_be_focused()

        # Screen readers hear new sentences as they arrive, never the whole message again.
        spoken = page.locator("[data-role=announcer] p").all_inner_texts()
        assert len(spoken) >= 3 and all(len(piece) < 60 for piece in spoken), spoken
        assert reply.get_attribute("aria-busy") == "true"
        assert messages.get_attribute("aria-live") is None

        # Esc stops the streaming reply and leaves the focus in the composer.
        page.keyboard.press("Escape")
        expect(reply).to_have_attribute("data-status", "cancelled")
        expect(composer).to_be_focused()
        expect(page.locator("[data-role=send]")).to_be_enabled()


def test_phone_layout_has_a_drawer_a_header_menu_and_nothing_sideways(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        for name, viewport in (("phone", PHONE), ("phone-360", SMALL_PHONE)):
            context = browser.new_context(viewport=viewport, has_touch=True, is_mobile=True, reduced_motion="reduce")
            page = context.new_page()
            sign_in(page, server.http, user.email)
            _open(page, server, conversation)
            assert_layout(page)
            screenshot(page, f"chat-{name}")

            # The sidebar is a drawer: closed, opened by its button, closed by Esc.
            sidebar = page.locator("[data-role=sidebar]")
            toggle = page.get_by_role("button", name="Conversations", exact=True)
            expect(sidebar).not_to_be_in_viewport()
            expect(toggle).to_have_attribute("aria-expanded", "false")
            toggle.click()
            expect(sidebar).to_be_in_viewport(ratio=1)
            expect(toggle).to_have_attribute("aria-expanded", "true")
            expect(sidebar.locator(".conv-link").first).to_contain_text("Order A-7")
            screenshot(page, f"chat-{name}-drawer")
            page.keyboard.press("Escape")
            expect(sidebar).not_to_be_in_viewport()
            expect(toggle).to_be_focused()
            toggle.click()
            page.get_by_role("button", name="Close conversations").click()
            expect(sidebar).not_to_be_in_viewport()

            # The header's links fold into a menu that fits the screen.
            menu = page.get_by_role("button", name="Menu")
            nav = page.locator("#site-nav")
            expect(nav).to_be_hidden()
            menu.click()
            expect(nav.get_by_role("link", name="Usage")).to_be_visible()
            assert page.evaluate("() => document.querySelector('#site-nav').getBoundingClientRect().right") <= viewport["width"]
            screenshot(page, f"chat-{name}-menu")
            page.keyboard.press("Escape")
            expect(nav).to_be_hidden()
            assert_layout(page)
            context.close()


def test_desktop_sidebar_collapses_and_remembers_it(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = browser.new_page(viewport=DESKTOP)
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)
        sidebar = page.locator("[data-role=sidebar]")
        toggle = page.get_by_role("button", name="Conversations", exact=True)
        expect(sidebar).to_be_visible()
        before = page.locator("[data-role=composer]").bounding_box()["width"]

        toggle.click()
        expect(sidebar).to_be_hidden()
        expect(toggle).to_have_attribute("aria-expanded", "false")
        page.reload()
        expect(sidebar).to_be_hidden()
        assert_layout(page)
        screenshot(page, "chat-desktop-sidebar-collapsed")
        page.get_by_role("button", name="Conversations", exact=True).click()
        expect(sidebar).to_be_visible()
        assert page.locator("[data-role=composer]").bounding_box()["width"] == before


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_follow_the_system_theme_and_have_no_serious_accessibility_violations(user, tmp_path, browser, scheme):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context = browser.new_context(viewport=viewport, color_scheme=scheme)
            page = context.new_page()
            page.goto(f"{server.http}/accounts/login/")
            _check_page(page, f"sign-in-{scheme}-{name}", composer=False)
            _assert_theme(page, scheme)
            sign_in(page, server.http, user.email)
            _check_page(page, f"conversation-list-{scheme}-{name}", composer=False)

            _open(page, server, conversation)
            if name == "desktop":
                page.fill("textarea[name=content]", '[[tool:issue_refund {"order_number": "A-7", "amount": 3}]] refund')
                page.keyboard.press("Enter")
            expect(page.locator(".approval").get_by_role("button", name="Approve")).to_be_visible()
            page.reload()
            expect(page.locator(".approval").get_by_role("button", name="Approve")).to_be_visible()
            # Rating a reply shows the comment box: check that state too (once per theme; later
            # rounds see the stored rating with the box closed).
            rated = page.locator("article.msg-assistant").first
            if rated.get_by_role("button", name="Good reply").get_attribute("aria-pressed") == "false":
                rated.get_by_role("button", name="Good reply").click()
                expect(rated.get_by_label("Comment on this reply")).to_be_visible()
            _check_page(page, f"chat-history-{scheme}-{name}")
            _assert_theme(page, scheme)

            for path, title in (("/usage/", "Your usage"), ("/api-tokens/", "API tokens")):
                page.goto(f"{server.http}{path}")
                expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
                _check_page(page, f"{path.strip('/')}-{scheme}-{name}", composer=False)
            context.close()


def _check_page(page, name: str, *, composer: bool = True) -> None:
    screenshot(page, name)
    assert_layout(page, composer=composer)
    assert_accessible(page, name)
    # Also at 360 px wide, the narrowest phone we support.
    size = page.viewport_size
    if size["width"] < 600:
        page.set_viewport_size(SMALL_PHONE)
        assert_layout(page, composer=composer)
        page.set_viewport_size(size)


def _assert_theme(page, scheme: str) -> None:
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[background.index("(") + 1 : background.index(")")].split(",")[:3])
    luminance = (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255
    assert (luminance > 0.8) if scheme == "light" else (luminance < 0.2), (scheme, background)


STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws://127.0.0.1:*; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def test_the_chat_page_works_under_a_strict_content_security_policy(user, tmp_path, browser):
    """No inline script, no inline style, no CDN: every page keeps working when the browser
    enforces a policy stricter than the one the app sends (config/security.py)."""
    conversation = orm(lambda: seed_history(user))
    # Pages fulfilled by the test (to add the header) count as coming from outside the machine
    # for Chromium's local-network checks, which would then refuse the socket to 127.0.0.1.
    strict_browser = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"]
    )
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        page = strict_browser.new_page(viewport=DESKTOP)

        def with_policy(route):
            response = route.fetch(max_redirects=0)
            headers = {**response.headers, "content-security-policy": STRICT_CSP}
            route.fulfill(response=response, headers=headers)

        page.route(f"{server.http}/**", with_policy)
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));"
        )
        sign_in(page, server.http, user.email)
        _open(page, server, conversation)
        expect(page.locator(".code-block .code-lang").first).to_have_text("python")
        page.fill("textarea[name=content]", "Hello under a strict policy")
        page.keyboard.press("Enter")
        expect(page.locator("article.msg-assistant")).to_have_count(3)
        reply = page.locator("article.msg-assistant").nth(2)
        expect(reply).to_have_attribute("data-status", "completed", timeout=15000)
        expect(reply.locator("[data-role=usage]")).to_be_visible()
        reply.get_by_role("button", name="Good reply").click()
        expect(reply.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
        for path in ("/usage/", "/api-tokens/", "/"):
            page.goto(f"{server.http}{path}")
        violations = page.evaluate("window.__violations")
        # Stop intercepting before the server goes: a late request (the favicon) must not fail
        # in the handler after daphne stopped.
        page.unroute_all(behavior="ignoreErrors")
        page.close()
    strict_browser.close()
    assert violations == []


def test_without_javascript_rename_feedback_search_and_delete_still_work_as_forms(user, tmp_path, browser):
    conversation = orm(lambda: seed_history(user))
    with running_daphne(tmp_path, extra_env=DIAGNOSTICS) as server:
        context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
        page = context.new_page()
        sign_in(page, server.http, user.email)
        page.goto(f"{server.http}/c/{conversation.public_id}/")

        page.get_by_label("Conversation actions").click()  # <details>: no script needed
        page.locator("[data-role=conversation-menu]").get_by_label("Title").fill("Renamed without scripts")
        page.locator("[data-role=conversation-menu]").get_by_role("button", name="Rename").click()
        expect(page.locator(".chat-head h1")).to_have_text("Renamed without scripts")

        page.locator("article.msg-assistant").last.get_by_role("button", name="Bad reply").click()
        expect(page.locator("[data-role=flash]")).to_contain_text("Thanks for your feedback.")
        expect(page.locator("article.msg-assistant").last.get_by_role("button", name="Bad reply")).to_have_attribute("aria-pressed", "true")
        assert orm(lambda: list(Feedback.objects.values_list("rating", flat=True))) == ["down"]

        page.get_by_role("searchbox", name="Search conversations").fill("poem")
        page.get_by_role("searchbox", name="Search conversations").press("Enter")
        expect(page.get_by_role("heading", name="Search your conversations")).to_be_visible()
        expect(page.locator(".search-list .conv-link")).to_have_count(1)
        assert_layout(page, composer=False)
        screenshot(page, "search-page-no-js-desktop")

        page.goto(f"{server.http}/c/{conversation.public_id}/")
        page.get_by_label("Conversation actions").click()
        page.locator("[data-role=conversation-menu]").get_by_role("button", name="Delete").click()
        expect(page.get_by_role("heading", name="Delete “Renamed without scripts”?")).to_be_visible()
        assert orm(lambda: Conversation.objects.filter(pk=conversation.pk).exists())
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("[data-role=flash]")).to_contain_text("Deleted “Renamed without scripts”.")
        assert not orm(lambda: Conversation.objects.filter(pk=conversation.pk).exists())
        context.close()


MODELS = {
    "AGENTS_MODELS": json.dumps([
        {"key": "quick", "label": "Quick", "provider": "scripted", "name": "scripted-quick"},
        {"key": "careful", "label": "Careful", "provider": "scripted", "name": "scripted-careful"},
    ]),
}


def test_the_model_menu_starts_a_conversation_on_a_model_and_switches_between_turns(user, tmp_path, browser):
    with running_daphne(tmp_path, extra_env=MODELS) as server:
        page = browser.new_page(viewport=DESKTOP)
        sign_in(page, server.http, user.email)
        page.get_by_label("Model").select_option(label="Careful")
        screenshot(page, "model-start-desktop")
        page.get_by_role("button", name="Start chatting").click()
        expect(page.locator("[data-role=connection]")).to_have_text("Connected")
        picker = page.locator("[data-role=composer]").get_by_label("Model")
        expect(picker).to_have_value("careful")

        page.fill("textarea[name=content]", "Hello there")
        page.keyboard.press("Enter")
        first = page.locator("article.msg-assistant").last
        expect(first).to_have_attribute("data-status", "completed")
        expect(first.locator("[data-role=usage]")).to_contain_text("scripted-careful")

        picker.select_option(label="Quick")
        page.fill("textarea[name=content]", "And once more")
        page.keyboard.press("Enter")
        expect(page.locator("article.msg-assistant")).to_have_count(2)
        second = page.locator("article.msg-assistant").last
        expect(second).to_have_attribute("data-status", "completed")
        expect(second.locator("[data-role=usage]")).to_contain_text("scripted-quick")
        assert_layout(page)
        screenshot(page, "model-menu-desktop")

        # Reopened with its history, the conversation shows the model it runs on now.
        phone = browser.new_page(viewport=PHONE)
        sign_in(phone, server.http, user.email)
        phone.goto(page.url)
        expect(phone.locator("[data-role=composer]").get_by_label("Model")).to_have_value("quick")
        expect(phone.locator("article.msg-assistant [data-role=usage]").first).to_contain_text("scripted-careful")
        assert_layout(phone)
        screenshot(phone, "model-menu-phone")

    conversation = orm(lambda: Conversation.objects.get(owner=user))
    assert conversation.model_key == "quick"
