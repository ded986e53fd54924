"""Feedback on replies: thumbs up or down and an optional comment, one per user and reply,
changeable; from the page with fetch() or as a plain form post; reviewed by staff in admin."""

import pytest
from django.test import Client
from django.urls import reverse

from chat.feedback import feedback_give
from chat.models import Feedback
from chat.tests.factories import MessageFactory, ReplyFactory, UserFactory, finished_reply
from config.errors import AppError

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _scripted_provider(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"


@pytest.fixture
def reply(user):
    return finished_reply(owner=user, content="The answer is 42.")


def test_feedback_is_stored_per_user_and_reply_and_can_be_changed_or_taken_back(user, reply):
    feedback_give(user=user, message=reply, rating="up")
    feedback_give(user=user, message=reply, rating="down", comment="  Wrong: it is 41. ")

    stored = Feedback.objects.get()
    assert (stored.user, stored.message, stored.rating, stored.comment) == (user, reply, "down", "Wrong: it is 41.")

    assert feedback_give(user=user, message=reply, rating="", comment="ignored") is None
    assert not Feedback.objects.exists()


def test_feedback_refuses_bad_input_and_keeps_what_was_there(user, reply):
    feedback_give(user=user, message=reply, rating="up", comment="Good")
    question = MessageFactory(conversation=reply.conversation, content="hi")
    streaming = ReplyFactory(conversation=reply.conversation, status="streaming")
    for kwargs in (
        {"message": reply, "rating": "meh"},
        {"message": reply, "rating": "down", "comment": "x" * 2001},
        {"message": question, "rating": "up"},
        {"message": streaming, "rating": "up"},
    ):
        with pytest.raises(AppError):
            feedback_give(user=user, **kwargs)
    assert list(Feedback.objects.values_list("rating", "comment")) == [("up", "Good")]


def test_the_page_saves_feedback_with_fetch_and_gets_json(client, user, reply):
    client.force_login(user)
    url = reverse("chat:message_feedback", args=[reply.public_id])

    response = client.post(url, {"rating": "down", "comment": "Too short"}, headers={"Accept": "application/json"})

    assert response.json() == {"message": str(reply.public_id), "rating": "down", "comment": "Too short"}
    bad = client.post(url, {"rating": "sideways"}, headers={"Accept": "application/json"})
    assert bad.status_code == 400 and "up or down" in bad.json()["error"]


def test_feedback_works_as_a_plain_form_post_without_javascript(client, user, reply):
    client.force_login(user)
    detail = reverse("chat:conversation_detail", args=[reply.conversation.public_id])

    response = client.post(reverse("chat:message_feedback", args=[reply.public_id]), {"rating": "up"}, follow=True)

    assert response.redirect_chain[0][0] == f"{detail}#m-{reply.public_id}"
    page = response.content.decode()
    assert "Thanks for your feedback." in page
    # The page shows the choice, and pressing the same thumb again would take it back.
    assert 'value="" class="icon-button thumb" data-thumb="up" aria-label="Good reply" aria-pressed="true"' in page
    assert Feedback.objects.get().rating == "up"


def test_feedback_needs_csrf_and_ownership(user, other_user, reply):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(reverse("chat:message_feedback", args=[reply.public_id]), {"rating": "up"}).status_code == 403

    intruder = Client()
    intruder.force_login(other_user)
    assert intruder.post(reverse("chat:message_feedback", args=[reply.public_id]), {"rating": "down"}).status_code == 404
    assert not Feedback.objects.exists()


def test_each_user_sees_only_their_own_feedback_on_the_page(client, user, reply):
    Feedback.objects.create(message=reply, user=UserFactory(), rating="down", comment="Someone else's")
    client.force_login(user)

    page = client.get(reverse("chat:conversation_detail", args=[reply.conversation.public_id])).content.decode()

    assert "Someone else" not in page and 'aria-pressed="true"' not in page


@pytest.fixture
def staff(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def test_staff_filter_conversations_and_messages_by_feedback_and_see_it_with_the_trace(staff, user):
    liked = finished_reply(owner=user, content="Liked reply")
    disliked = finished_reply(owner=user, content="Disliked reply")
    silent = finished_reply(owner=user, content="Nobody rated me")
    Feedback.objects.create(message=liked, user=user, rating="up")
    Feedback.objects.create(message=disliked, user=user, rating="down", comment="It ignored my question")

    def listed(url, **params) -> str:
        response = staff.get(url, params)
        assert response.status_code == 200
        return response.content.decode()

    messages = reverse("admin:chat_message_changelist")
    down = listed(messages, feedback="down")
    assert "Disliked reply" in down and "Liked reply" not in down
    none = listed(messages, feedback="none", role="assistant")
    assert "Nobody rated me" in none and "Disliked reply" not in none
    assert "👍 1" in listed(messages)

    conversations = reverse("admin:chat_conversation_changelist")
    commented = listed(conversations, feedback="comment")
    assert str(disliked.conversation) in commented and str(liked.conversation) not in commented

    message_page = listed(reverse("admin:chat_message_change", args=[disliked.pk]))
    assert "It ignored my question" in message_page and "Bad reply" in message_page
    run_page = listed(reverse("admin:chat_run_change", args=[disliked.run.pk]))
    assert "Feedback on the reply" in run_page and "It ignored my question" in run_page
    feedback_list = listed(reverse("admin:chat_feedback_changelist"), rating="down")
    assert "It ignored my question" in feedback_list and silent.content not in feedback_list
