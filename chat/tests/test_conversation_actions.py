"""Rename, delete (with confirmation) and export a conversation from the chat page."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from chat.conversations import conversation_rename
from chat.export import conversation_export, to_markdown
from chat.models import Approval, Conversation, Feedback
from chat.tests.factories import ConversationFactory, MessageFactory, RunFactory, finished_reply
from config.errors import AppError

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _scripted_provider(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def test_rename_collapses_whitespace_and_refuses_blank_or_long_titles(user):
    conversation = ConversationFactory(owner=user, title="Old")
    before = Conversation.objects.get(pk=conversation.pk).updated_at

    conversation_rename(conversation=conversation, title="  Trip   to\nOslo ")

    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.title == "Trip to Oslo"
    assert stored.updated_at == before  # renaming does not move it to the top of the sidebar
    for bad in ("   ", "x" * 201):
        with pytest.raises(AppError):
            conversation_rename(conversation=conversation, title=bad)
    assert Conversation.objects.get(pk=conversation.pk).title == "Trip to Oslo"


def test_rename_from_a_plain_form_redirects_back_and_from_fetch_answers_json(signed_in, user):
    conversation = ConversationFactory(owner=user, title="Old")
    url = reverse("chat:conversation_rename", args=[conversation.public_id])
    detail = reverse("chat:conversation_detail", args=[conversation.public_id])

    response = signed_in.post(url, {"title": "Plain form", "next": detail})
    assert response.status_code == 302 and response["Location"] == detail

    response = signed_in.post(url, {"title": "With fetch"}, headers={"Accept": "application/json"})
    assert response.json() == {"conversation": str(conversation.public_id), "title": "With fetch"}

    response = signed_in.post(url, {"title": ""}, headers={"Accept": "application/json"})
    assert response.status_code == 400 and "title" in response.json()["error"]
    assert Conversation.objects.get(pk=conversation.pk).title == "With fetch"


def test_rename_refuses_someone_elses_conversation_and_an_outside_redirect(signed_in, user, other_user):
    theirs = ConversationFactory(owner=other_user, title="Theirs")
    assert signed_in.post(reverse("chat:conversation_rename", args=[theirs.public_id]), {"title": "Mine now"}).status_code == 404
    assert Conversation.objects.get(pk=theirs.pk).title == "Theirs"

    mine = ConversationFactory(owner=user)
    response = signed_in.post(
        reverse("chat:conversation_rename", args=[mine.public_id]), {"title": "Ok", "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("chat:conversation_detail", args=[mine.public_id])


def test_rename_needs_the_csrf_token(user):
    conversation = ConversationFactory(owner=user, title="Old")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("chat:conversation_rename", args=[conversation.public_id]), {"title": "New"})
    assert response.status_code == 403
    assert Conversation.objects.get(pk=conversation.pk).title == "Old"


def test_delete_without_javascript_asks_on_a_page_first(signed_in, user):
    conversation = ConversationFactory(owner=user, title="Keep me?")
    url = reverse("chat:conversation_delete", args=[conversation.public_id])

    asked = signed_in.post(url, {"ask": "1"})
    assert asked.status_code == 200 and "Delete “Keep me?”?" in asked.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    done = signed_in.post(url, {"next": reverse("chat:conversation_detail", args=[conversation.public_id])}, follow=True)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert done.redirect_chain[-1][0] == reverse("chat:conversation_list")
    assert "Deleted “Keep me?”." in done.content.decode()


def test_delete_from_the_sidebar_returns_to_the_open_conversation(signed_in, user):
    open_one = ConversationFactory(owner=user)
    doomed = ConversationFactory(owner=user)
    here = reverse("chat:conversation_detail", args=[open_one.public_id])

    response = signed_in.post(reverse("chat:conversation_delete", args=[doomed.public_id]), {"next": here})

    assert response["Location"] == here and not Conversation.objects.filter(pk=doomed.pk).exists()


@pytest.fixture
def exported(user):
    conversation = ConversationFactory(owner=user, title="Refund for A-7", agent_key="support")
    MessageFactory(conversation=conversation, content="Please refund ```order``` A-7")
    reply = finished_reply(
        conversation=conversation,
        content="Done. Here is the code:\n\n```python\nprint('ok')\n```",
        agent_name="Support",
        activity=[
            {"kind": "tool", "call_id": "c1", "name": "issue_refund", "arguments": {"order_number": "A-7", "amount": 3},
             "agent": "Support", "status": "completed", "output": "Refund of 3.00 USD issued for A-7"},
            {"kind": "handoff", "agent": "Billing"},
        ],
        structured={"type": "OrderStatus", "data": {"order_number": "A-7", "found": True}},
    )
    Approval.objects.create(run=reply.run, call_id="c1", tool_name="issue_refund", status="approved", reason="fine")
    Feedback.objects.create(message=reply, user=user, rating="up", comment="Quick!")
    failed_run = RunFactory(conversation=conversation, status="failed")
    MessageFactory(conversation=conversation, run=failed_run, content="And another?")
    MessageFactory(conversation=conversation, run=failed_run, role="assistant", status="failed", error="The model is down.", cost=None, total_tokens=5)
    return conversation


def test_json_export_holds_messages_tools_handoffs_approvals_usage_statuses_and_feedback(signed_in, exported):
    response = signed_in.get(reverse("chat:conversation_export", args=[exported.public_id, "json"]))

    assert response["Content-Type"].startswith("application/json")
    assert 'attachment; filename="refund-for-a-7-' in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["conversation"]["title"] == "Refund for A-7"
    roles = [m["role"] for m in data["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    reply = data["messages"][1]
    assert reply["activity"][0]["output"] == "Refund of 3.00 USD issued for A-7"
    assert reply["activity"][1] == {"kind": "handoff", "agent": "Billing"}
    assert reply["approvals"][0]["status"] == "approved"
    assert reply["usage"]["total_tokens"] == 49 and reply["usage"]["cost_usd"] == "0.00002800"
    assert reply["run"]["status"] == "completed" and reply["status"] == "completed"
    assert reply["structured"]["type"] == "OrderStatus"
    assert reply["feedback"]["rating"] == "up"
    assert data["messages"][3]["status"] == "failed" and data["messages"][3]["error"] == "The model is down."
    assert data["usage"]["total_tokens"] == 54 and data["usage"]["replies_with_unknown_cost"] == 1


def test_markdown_export_reads_like_the_conversation(signed_in, exported):
    response = signed_in.get(reverse("chat:conversation_export", args=[exported.public_id, "md"]))

    text = response.content.decode()
    assert response["Content-Type"].startswith("text/markdown")
    assert text.startswith("# Refund for A-7\n")
    assert "Please refund ```order``` A-7" in text
    assert "**Tool `issue_refund`** (completed)" in text and "Refund of 3.00 USD issued for A-7" in text
    assert "*Handed off to Billing.*" in text and "Approval: approved: fine" in text
    assert "```python\nprint('ok')\n```" in text  # the reply's own Markdown, untouched
    assert "· failed" in text and "Error: The model is down." in text
    assert "49 tokens (42 in, 7 out)" in text and "Your feedback: 👍 Quick!" in text


def test_export_takes_a_fixed_number_of_queries(user, exported, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        to_markdown(conversation_export(conversation=exported, user=user))


def test_export_of_someone_elses_conversation_is_not_found(signed_in, other_user):
    theirs = ConversationFactory(owner=other_user)
    for fmt in ("md", "json"):
        assert signed_in.get(reverse("chat:conversation_export", args=[theirs.public_id, fmt])).status_code == 404
    mine_url = reverse("chat:conversation_export", args=[theirs.public_id, "exe"])
    assert signed_in.get(mine_url).status_code == 404
