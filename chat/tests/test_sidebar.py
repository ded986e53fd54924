"""The chat page's sidebar: the user's own conversations, newest activity first, a page at a
time; its cost does not grow with the number of conversations."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation
from chat.search import PAGE_SIZE, conversation_page
from chat.tests.factories import ConversationFactory, RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _scripted_provider(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


def _many(user, count: int) -> list[Conversation]:
    now = timezone.now()
    rows = Conversation.objects.bulk_create(
        Conversation(owner=user, agent_key="assistant", title=f"Chat {n:04d}", current_agent_name="Assistant")
        for n in range(count)
    )
    # Distinct activity times: Chat 0000 is the oldest.
    for n, row in enumerate(rows):
        Conversation.objects.filter(pk=row.pk).update(updated_at=now - timedelta(minutes=count - n))
    return rows


def _page_queries(client, url) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_sidebar_shows_my_conversations_newest_activity_first_with_their_agent(client, user, other_user):
    old = ConversationFactory(owner=user, title="Old chat", agent_key="tutor")
    new = ConversationFactory(owner=user, title="New chat about tides")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=2))
    ConversationFactory(owner=other_user, title="Not mine")
    client.force_login(user)

    page = client.get(reverse("chat:conversation_detail", args=[new.public_id])).content.decode()

    sidebar = page[page.index('id="sidebar"') : page.index('id="chat"')]
    assert sidebar.index("New chat about tides") < sidebar.index("Old chat")
    assert "Homework tutor" in sidebar and "Not mine" not in page
    assert 'aria-current="page"' in sidebar


def test_the_chat_page_costs_the_same_queries_with_ten_or_a_thousand_conversations(client, user):
    client.force_login(user)
    few = _many(user, 10)
    url = reverse("chat:conversation_detail", args=[few[-1].public_id])
    with_ten, _ = _page_queries(client, url)

    _many(user, 990)
    with_thousand, page = _page_queries(client, url)
    started = time.perf_counter()
    for _ in range(5):
        client.get(url)
    elapsed = (time.perf_counter() - started) / 5

    assert with_thousand == with_ten, (with_ten, with_thousand)
    assert page.count('class="conv-link"') == PAGE_SIZE
    assert "Load more" in page
    # Measured on the 2-core dev box: ~90 ms on SQLite, 9 queries. A generous bound that still catches a
    # page rendering every conversation.
    print(f"chat page with 1,000 conversations: {elapsed * 1000:.0f} ms, {with_thousand} queries")
    assert elapsed < 1.5


def test_load_more_pages_through_every_conversation_once(client, user):
    _many(user, 75)
    client.force_login(user)
    seen, cursor, pages = [], "", 0
    while True:
        url = reverse("chat:sidebar_page") + (f"?cursor={cursor}" if cursor else "")
        queries, html = _page_queries(client, url)
        assert queries <= 4
        page = conversation_page(user=user, cursor=cursor)
        seen += [c.title for c in page.conversations]
        assert all(c.title in html for c in page.conversations)
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            assert "Load more" not in html
            break
        assert "Load more" in html
    assert pages == 3
    assert seen == [f"Chat {n:04d}" for n in range(74, -1, -1)]


def test_a_running_conversation_is_marked(client, user):
    busy = ConversationFactory(owner=user, title="Busy one")
    RunFactory(conversation=busy, status="running", finished_at=None)
    client.force_login(user)

    page = client.get(reverse("chat:conversation_detail", args=[busy.public_id])).content.decode()

    item = page[page.index(f'data-conversation="{busy.public_id}"') :][:600]
    assert "data-running" in item and " · running" in item


def test_a_bad_cursor_is_refused_with_a_clear_error(client, user):
    client.force_login(user)
    response = client.get(reverse("chat:sidebar_page") + "?cursor=yesterday")
    assert response.status_code == 400
    assert "reload" in response.content.decode()
