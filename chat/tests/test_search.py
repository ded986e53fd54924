"""Search over the user's own conversation titles and message text, on both databases
(PostgreSQL full-text search; a substring fallback on SQLite)."""

import pytest
from django.urls import reverse

from chat.search import search_conversations
from chat.tests.factories import ConversationFactory, MessageFactory, ReplyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _scripted_provider(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


@pytest.fixture
def history(user, other_user):
    harbour = ConversationFactory(owner=user, title="Harbour trip")
    MessageFactory(conversation=harbour, content="Which lighthouses can we visit near the harbour?")
    reply = ReplyFactory(conversation=harbour, content="The old lighthouse on the pier is open on Sundays.")
    taxes = ConversationFactory(owner=user, title="Tax return questions")
    MessageFactory(conversation=taxes, content="How do I file my taxes?")
    theirs = ConversationFactory(owner=other_user, title="Their lighthouse chat")
    MessageFactory(conversation=theirs, content="A lighthouse secret nobody else may read.")
    return {"harbour": harbour, "reply": reply, "taxes": taxes}


def test_search_finds_message_text_and_links_to_the_message(user, history):
    hits = search_conversations(user=user, query="lighthouse Sundays")

    assert [hit.message for hit in hits] == [history["reply"]]
    assert hits[0].anchor == f"m-{history['reply'].public_id}"
    marked = [text for text, matched in hits[0].excerpt.parts if matched]
    assert "Sundays" in marked


def test_search_finds_titles_and_never_someone_elses_conversations(user, history):
    hits = search_conversations(user=user, query="tax")

    assert hits and hits[0].conversation == history["taxes"] and hits[0].message is None
    assert all(hit.conversation.owner_id == user.pk for hit in search_conversations(user=user, query="lighthouse"))
    assert not search_conversations(user=user, query="secret nobody")


def test_search_without_words_finds_nothing(user, history):
    assert search_conversations(user=user, query="  !!! ") == []


def test_search_page_and_sidebar_fragment_escape_model_text(client, user):
    conversation = ConversationFactory(owner=user, title="<b>bold</b> title")
    ReplyFactory(conversation=conversation, content="The answer is <script>alert(1)</script> forty-two")
    client.force_login(user)

    page = client.get(reverse("chat:search"), {"q": "answer forty"}).content.decode()
    fragment = client.get(reverse("chat:search"), {"q": "answer forty", "fragment": "1"}).content.decode()

    for html in (page, fragment):
        # (PostgreSQL's excerpt may leave the tag out; SQLite's shows it escaped.)
        assert "<script>alert" not in html
        assert "<b>bold</b>" not in html
        assert "<mark>answer</mark>" in html.lower() or "<mark>answer" in html.lower()
        assert "#m-" in html
    assert "<html" in page and "<html" not in fragment


def test_search_needs_sign_in(client):
    response = client.get(reverse("chat:search"), {"q": "x"})
    assert response.status_code == 302


def test_search_stays_fast_over_a_thousand_conversations(user):
    import time

    from chat.models import Conversation, Message

    conversations = Conversation.objects.bulk_create(
        Conversation(owner=user, agent_key="assistant", title=f"Chat {n}") for n in range(1000)
    )
    Message.objects.bulk_create(
        Message(conversation=c, role=role, content=f"{text} number {n}")
        for n, c in enumerate(conversations)
        for role, text in (("user", "Tell me about the weather in Oslo"), ("assistant", "It is rainy and cold in Oslo today"))
        * 2
    )
    Message.objects.create(conversation=conversations[500], role="assistant", content="The lighthouse keeper waved.")

    started = time.perf_counter()
    hits = search_conversations(user=user, query="lighthouse keeper")
    elapsed = time.perf_counter() - started

    assert [hit.message.content for hit in hits] == ["The lighthouse keeper waved."]
    print(f"search over 4,001 messages: {elapsed * 1000:.0f} ms")
    assert elapsed < 2
