import pytest
from django.test import Client
from django.urls import reverse

from chat.models import Conversation
from chat.tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _scripted_provider(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def test_pages_require_sign_in(client):
    conversation = ConversationFactory()
    for url in (reverse("chat:conversation_list"), reverse("chat:conversation_detail", args=[conversation.public_id])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))


def test_list_shows_only_my_conversations(signed_in, user):
    ConversationFactory(owner=user, title="Mine")
    ConversationFactory(title="Someone else's")

    page = signed_in.get(reverse("chat:conversation_list")).content.decode()

    assert "Mine" in page and "Someone else" not in page
    assert 'value="assistant"' in page  # the agent picker


def test_starting_a_conversation_with_an_agent_opens_its_chat_page(signed_in, user):
    response = signed_in.post(reverse("chat:conversation_create"), {"agent": "assistant"})

    conversation = Conversation.objects.get(owner=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("chat:conversation_detail", args=[conversation.public_id])
    assert conversation.agent_key == "assistant" and conversation.current_agent_name == "Assistant"


def test_unknown_agent_is_refused(signed_in, user):
    response = signed_in.post(reverse("chat:conversation_create"), {"agent": "nope"})
    assert response.status_code == 400
    assert not Conversation.objects.filter(owner=user).exists()


def test_forms_need_the_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("chat:conversation_create"), {"agent": "assistant"})
    assert response.status_code == 403
    assert not Conversation.objects.exists()


def test_someone_elses_conversation_is_not_found(signed_in):
    theirs = ConversationFactory()
    assert signed_in.get(reverse("chat:conversation_detail", args=[theirs.public_id])).status_code == 404
    assert signed_in.post(reverse("chat:conversation_delete", args=[theirs.public_id])).status_code == 404
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_chat_page_renders_history_with_model_output_sanitised(signed_in, user):
    conversation = ConversationFactory(owner=user)
    MessageFactory(conversation=conversation, role="user", content="<b>hi</b>")
    MessageFactory(
        conversation=conversation,
        role="assistant",
        content="**Bold** <script>alert('x')</script> [link](javascript:alert(1))",
        total_tokens=1234,
        activity=[{"kind": "tool", "call_id": "c1", "name": "get_current_time", "arguments": {}, "status": "completed", "output": "<img src=x onerror=alert(1)>"}],
    )

    page = signed_in.get(reverse("chat:conversation_detail", args=[conversation.public_id])).content.decode()

    assert "<strong>Bold</strong>" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert 'href="javascript' not in page
    assert "<b>hi</b>" not in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "<img src=x" not in page and "get_current_time" in page
    assert "1,234 tokens" in page
    assert 'src="/static/chat/chat.js"' in page  # served by the app, no CDN
    assert "https://" not in page.split("<body>")[0]


def test_delete_removes_the_conversation(signed_in, user):
    conversation = ConversationFactory(owner=user)
    response = signed_in.post(reverse("chat:conversation_delete", args=[conversation.public_id]))
    assert response.status_code == 302 and not Conversation.objects.filter(pk=conversation.pk).exists()


def test_without_a_model_the_chat_page_explains_how_to_configure_one(signed_in, user, settings, monkeypatch):
    settings.AGENTS_MODEL_PROVIDER = ""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    from agents_app import local

    monkeypatch.setattr(local, "is_installed", lambda: False)
    conversation = ConversationFactory(owner=user)

    response = signed_in.get(reverse("chat:conversation_detail", args=[conversation.public_id]))

    assert response.status_code == 503
    page = response.content.decode()
    assert "OPENAI_API_KEY" in page and "local_model install" in page
