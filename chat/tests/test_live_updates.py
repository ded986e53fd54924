"""Every open tab of a user follows what happens to their conversations, whichever tab, page
form or API client did it: renames, runs starting and ending (the sidebar's "running" mark),
and feedback on replies. Driven with WebsocketCommunicator on the real channel layer and
database; the HTTP API with a real token. Also: rename, export and feedback over the API."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from agents.testing import assistant_message, function_call
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat import export
from chat.models import Conversation, Feedback, Message, Run
from chat.tests.api_helpers import api_client, token_for
from chat.tests.factories import MessageFactory, ReplyFactory, RunFactory, finished_reply
from chat.tests.helpers import connect, extra_tools, of_type, receive_until, send_message
from chat.tests.scripts import streamed
from chat.tests.test_approvals import refund_order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant", title="Old title")


@pytest.fixture
async def reply(conversation):
    await sync_to_async(MessageFactory)(conversation=conversation, content="What is 6 x 7?")
    return await sync_to_async(finished_reply)(conversation=conversation, content="42.")


async def nothing_else(ws) -> None:
    """Nothing is waiting on the socket: a ping's pong is the next thing it sends."""
    await ws.send_json_to({"type": "ping", "request_id": "check"})
    assert await ws.receive_json_from(timeout=10) == {"type": "pong", "request_id": "check"}


def rename_frame(conversation, title, **extra) -> dict:
    return {"type": "conversation.rename", "conversation": str(conversation.public_id), "title": title, **extra}


# --- rename ---------------------------------------------------------------------------------
async def test_a_rename_on_one_socket_reaches_every_socket_of_that_user_and_nobody_else(user, other_user, conversation):
    tab_a, tab_b, stranger = await connect(user), await connect(user), await connect(other_user)
    await tab_a.send_json_to(rename_frame(conversation, "  Trip   to Oslo ", request_id="r-rename"))

    heard_a = (await receive_until(tab_a, "conversation.renamed"))[-1]
    heard_b = (await receive_until(tab_b, "conversation.renamed"))[-1]
    await nothing_else(stranger)
    for ws in (tab_a, tab_b, stranger):
        await ws.disconnect()

    expected = {"type": "conversation.renamed", "conversation": str(conversation.public_id), "title": "Trip to Oslo", "request_id": "r-rename"}
    assert heard_a == heard_b == expected
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "Trip to Oslo"


@pytest.mark.parametrize(
    ("title", "code"),
    [("   ", "empty_title"), ("x" * 201, "invalid_field"), (42, "invalid_field"), ("a\x00b", "invalid_field"), (None, "missing_field")],
)
async def test_a_bad_title_over_the_socket_gets_an_error_and_changes_nothing(user, conversation, title, code):
    ws = await connect(user)
    frame = rename_frame(conversation, title, request_id="r-bad")
    if title is None:
        del frame["title"]
    await ws.send_json_to(frame)
    error = (await receive_until(ws, "error"))[-1]
    await nothing_else(ws)  # and no rename event
    await ws.disconnect()

    assert error["code"] == code and error["request_id"] == "r-bad" and error["conversation"] == str(conversation.public_id)
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "Old title"


async def test_someone_elses_conversation_cannot_be_renamed_over_the_socket(user, other_user, conversation):
    owner_tab = await connect(user)
    intruder = await connect(other_user)
    await intruder.send_json_to(rename_frame(conversation, "Mine now"))
    error = (await receive_until(intruder, "error"))[-1]
    await nothing_else(owner_tab)
    for ws in (owner_tab, intruder):
        await ws.disconnect()

    assert error["code"] == "not_found"
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "Old title"


async def test_the_page_form_and_the_api_rename_live_in_open_tabs_too(user, conversation):
    tab = await connect(user)
    browser = Client()
    await sync_to_async(browser.force_login)(user)
    url = reverse("chat:conversation_rename", args=[conversation.public_id])
    await sync_to_async(browser.post)(url, {"title": "From the page"}, headers={"Accept": "application/json"})
    from_page = (await receive_until(tab, "conversation.renamed"))[-1]

    client = api_client(await token_for(user))
    response = await client.patch(
        f"/api/conversations/{conversation.public_id}", json.dumps({"title": "From the API", "request_id": "api-1"}),
        content_type="application/json",
    )
    from_api = (await receive_until(tab, "conversation.renamed"))[-1]
    await tab.disconnect()

    assert from_page["title"] == "From the page" and from_page["request_id"] is None
    assert from_api["title"] == "From the API" and from_api["request_id"] == "api-1"
    assert response.status_code == 200
    assert response.json()["conversation"] == {**response.json()["conversation"], "id": str(conversation.public_id), "title": "From the API"}


async def test_renaming_over_the_api_refuses_bad_titles_and_someone_elses_conversation(user, other_user, conversation):
    client = api_client(await token_for(user))
    url = f"/api/conversations/{conversation.public_id}"
    blank = await client.patch(url, json.dumps({"title": " \n "}), content_type="application/json")
    missing = await client.patch(url, json.dumps({}), content_type="application/json")
    long = await client.patch(url, json.dumps({"title": "x" * 201}), content_type="application/json")
    theirs = await api_client(await token_for(other_user)).patch(url, json.dumps({"title": "Mine"}), content_type="application/json")

    assert (blank.status_code, blank.json()["error"]["code"]) == (400, "empty_title")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "missing_field")
    assert (long.status_code, long.json()["error"]["code"]) == (400, "invalid_field")
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "not_found")
    assert (await Conversation.objects.aget(pk=conversation.pk)).title == "Old title"


# --- the "running" mark: runs starting and ending in the user's other conversations ---------
async def test_a_run_in_one_tab_marks_that_conversation_running_in_the_users_other_tabs(user, other_user, conversation, script):
    elsewhere = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with script([streamed("Hello ", "there.")]):
        runner, watcher, stranger = await connect(user), await connect(user), await connect(other_user)
        await watcher.send_json_to({"type": "conversation.open", "conversation": str(elsewhere.public_id)})
        await receive_until(watcher, "conversation.state")
        await send_message(runner, conversation, "Hi, how are you today?")
        run_events = await receive_until(runner, "run.finished")
        started = (await receive_until(watcher, "conversation.activity"))[-1]
        ended = (await receive_until(watcher, "conversation.activity"))[-1]
        await nothing_else(runner)  # the tab running it follows the run itself, not the mark
        await nothing_else(stranger)
        for ws in (runner, watcher, stranger):
            await ws.disconnect()

    stored = await Conversation.objects.aget(pk=conversation.pk)
    assert started == {
        "type": "conversation.activity", "conversation": str(conversation.public_id), "agent": "assistant",
        "title": "Old title", "running": True, "status": started["status"], "updated_at": started["updated_at"],
    }
    assert started["status"] in ("queued", "running")
    assert ended["running"] is False and ended["status"] == "completed"
    assert ended["updated_at"] == stored.updated_at.isoformat() and ended["updated_at"] > started["updated_at"]
    assert not of_type(run_events, "conversation.activity")


async def test_a_new_conversation_is_titled_and_marked_waiting_while_a_tool_call_awaits_approval(user, script):
    steps = [
        [assistant_message("I will refund that."), function_call("refund_order", {"order_number": "A-1", "amount": 5}, call_id="c1")],
        streamed("Fine."),
    ]
    fresh = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with extra_tools("assistant", refund_order), script(steps):
        runner, watcher = await connect(user), await connect(user)
        await send_message(runner, fresh, "Please refund order A-1")
        await receive_until(runner, "run.paused")
        await receive_until(watcher, "conversation.activity")
        paused = (await receive_until(watcher, "conversation.activity"))[-1]
        await runner.send_json_to({"type": "run.cancel", "conversation": str(fresh.public_id)})
        stopped = (await receive_until(watcher, "conversation.activity"))[-1]
        for ws in (runner, watcher):
            await ws.disconnect()

    assert paused["title"] == "Please refund order A-1"  # titled after its first message
    assert (paused["running"], paused["status"]) == (True, "awaiting_approval")
    assert (stopped["running"], stopped["status"]) == (False, "cancelled")


@pytest.mark.parametrize(
    ("held_as", "ends_as"),
    [("running", "interrupted"), ("awaiting_approval", "cancelled")],
    ids=["its-process-died", "its-approval-expired"],
)
async def test_a_run_ended_by_the_sweeper_clears_the_running_mark_in_open_tabs(user, conversation, held_as, ends_as):
    long_ago = timezone.now() - timedelta(hours=1)
    run = await sync_to_async(RunFactory)(
        conversation=conversation, status=held_as, finished_at=None, heartbeat_at=long_ago, approval_expires_at=long_ago
    )
    await sync_to_async(ReplyFactory)(conversation=conversation, run=run, status=held_as, content="Partial")
    watcher = await connect(user)
    await sync_to_async(call_command)("recover_runs", stdout=io.StringIO())
    ended = (await receive_until(watcher, "conversation.activity"))[-1]
    await watcher.disconnect()

    assert ended["conversation"] == str(conversation.public_id)
    assert (ended["running"], ended["status"]) == (False, ends_as)
    assert (await Run.objects.aget(pk=run.pk)).status == ends_as


# --- feedback ---------------------------------------------------------------------------------
def feedback_frame(message, rating, **extra) -> dict:
    return {"type": "feedback.give", "message": str(message.public_id), "rating": rating, **extra}


async def test_feedback_over_the_socket_is_stored_and_every_tab_of_the_user_hears_it(user, other_user, reply):
    tab_a, tab_b, stranger = await connect(user), await connect(user), await connect(other_user)
    await tab_a.send_json_to(feedback_frame(reply, "down", comment="  It is 42, but say why. ", request_id="fb-1"))
    given_a = (await receive_until(tab_a, "feedback.updated"))[-1]
    given_b = (await receive_until(tab_b, "feedback.updated"))[-1]
    stored = await Feedback.objects.aget(message=reply, user=user)

    await tab_b.send_json_to(feedback_frame(reply, "up"))
    changed = (await receive_until(tab_a, "feedback.updated"))[-1]
    await tab_a.send_json_to(feedback_frame(reply, "none"))
    removed = (await receive_until(tab_a, "feedback.updated"))[-1]
    await nothing_else(stranger)
    for ws in (tab_a, tab_b, stranger):
        await ws.disconnect()

    assert given_a == given_b == {
        "type": "feedback.updated", "conversation": str(reply.conversation.public_id), "message": str(reply.public_id),
        "rating": "down", "comment": "It is 42, but say why.", "updated_at": stored.updated_at.isoformat(), "request_id": "fb-1",
    }
    assert (stored.rating, stored.comment) == ("down", "It is 42, but say why.")
    assert (changed["rating"], changed["comment"]) == ("up", "")
    assert (removed["rating"], removed["comment"], removed["updated_at"]) == ("none", "", None)
    assert not await Feedback.objects.filter(message=reply).aexists()


async def test_bad_feedback_over_the_socket_gets_clear_errors_and_keeps_what_was_there(user, other_user, conversation, reply):
    await sync_to_async(Feedback.objects.create)(message=reply, user=user, rating="up", comment="Good")
    question = await Message.objects.aget(conversation=conversation, role="user")
    streaming = await sync_to_async(ReplyFactory)(conversation=conversation, status="streaming")
    theirs = await sync_to_async(finished_reply)(owner=other_user)
    cases = [
        (feedback_frame(reply, "meh"), "invalid_field"),
        (feedback_frame(reply, True), "invalid_field"),
        ({"type": "feedback.give", "message": str(reply.public_id)}, "missing_field"),
        (feedback_frame(reply, "down", comment="x" * 2001), "invalid_field"),
        (feedback_frame(reply, "down", comment=["not", "text"]), "invalid_field"),
        ({**feedback_frame(reply, "up"), "message": "not-an-id"}, "invalid_field"),
        (feedback_frame(question, "up"), "not_a_reply"),
        (feedback_frame(streaming, "up"), "reply_streaming"),
        (feedback_frame(theirs, "down"), "not_found"),
    ]
    ws = await connect(user)
    codes = []
    for frame, _code in cases:
        await ws.send_json_to(frame)
        codes.append((await receive_until(ws, "error"))[-1]["code"])
    await nothing_else(ws)
    await ws.disconnect()

    assert codes == [code for _frame, code in cases]
    assert [(f.message_id, f.rating, f.comment) async for f in Feedback.objects.all()] == [(reply.pk, "up", "Good")]


async def test_feedback_over_the_api_is_stored_changed_and_taken_back_and_open_tabs_follow(user, other_user, reply):
    client = api_client(await token_for(user))
    url = f"/api/messages/{reply.public_id}/feedback"
    tab = await connect(user)
    given = await client.put(url, json.dumps({"rating": "up", "comment": "Spot on"}), content_type="application/json")
    heard = (await receive_until(tab, "feedback.updated"))[-1]
    removed = await client.put(url, json.dumps({"rating": "none"}), content_type="application/json")
    await tab.disconnect()
    bad = await client.put(url, json.dumps({"rating": "sideways"}), content_type="application/json")
    theirs = await api_client(await token_for(other_user)).put(url, json.dumps({"rating": "down"}), content_type="application/json")
    missing = await client.put("/api/messages/00000000-0000-0000-0000-000000000000/feedback", json.dumps({"rating": "up"}), content_type="application/json")

    assert given.status_code == 200
    assert given.json()["feedback"] == {**given.json()["feedback"], "message": str(reply.public_id), "rating": "up", "comment": "Spot on"}
    assert (heard["rating"], heard["comment"]) == ("up", "Spot on")
    assert removed.json()["feedback"] == {"message": str(reply.public_id), "rating": "none", "comment": "", "updated_at": None}
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_field")
    assert (theirs.status_code, missing.status_code) == (404, 404)
    assert not await Feedback.objects.aexists()


# --- export over the API ------------------------------------------------------------------------
async def test_the_api_exports_the_same_markdown_and_json_as_the_page(user, other_user, conversation, reply):
    await sync_to_async(Feedback.objects.create)(message=reply, user=user, rating="up", comment="Nice")
    client = api_client(await token_for(user))
    url = f"/api/conversations/{conversation.public_id}/export"
    as_json = await client.get(url)
    as_markdown = await client.get(url, {"format": "markdown"})
    bad = await client.get(url, {"format": "pdf"})
    theirs = await api_client(await token_for(other_user)).get(url)
    browser = Client()
    await sync_to_async(browser.force_login)(user)
    page_json = await sync_to_async(browser.get)(reverse("chat:conversation_export", args=[conversation.public_id, "json"]))
    page_markdown = await sync_to_async(browser.get)(reverse("chat:conversation_export", args=[conversation.public_id, "md"]))

    def same(document: dict) -> dict:
        return {**document, "exported_at": None}

    def lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if "exported" not in line]

    assert as_json.status_code == 200 and as_json["Content-Type"].startswith("application/json")
    data = json.loads(as_json.content)
    assert same(data) == same(json.loads(page_json.content))
    assert data["format"] == "agents-chat.conversation" and data["conversation"]["title"] == "Old title"
    assert [m["content"] for m in data["messages"]] == ["What is 6 x 7?", "42."]
    assert data["messages"][1]["feedback"]["rating"] == "up"
    assert as_json["Content-Disposition"] == f'attachment; filename="{export.filename(conversation, "json")}"'
    assert as_markdown["Content-Type"].startswith("text/markdown")
    assert lines(as_markdown.content.decode()) == lines(page_markdown.content.decode())
    assert "# Old title" in as_markdown.content.decode() and "Your feedback: 👍 Nice" in as_markdown.content.decode()
    assert (bad.status_code, json.loads(bad.content)["error"]["code"]) == (400, "invalid_field")
    assert theirs.status_code == 404


# --- the sidebar entry a tab fetches for a conversation it does not list yet ---------------------
def test_the_sidebar_serves_one_conversations_entry_and_only_the_users_own(user, other_user):
    mine = Conversation.objects.create(owner=user, agent_key="assistant", title="Plan a weekend in Bergen")
    theirs = Conversation.objects.create(owner=other_user, agent_key="assistant", title="Not yours")
    browser = Client()
    browser.force_login(user)
    url = reverse("chat:sidebar_page")

    entry = browser.get(url, {"conversation": str(mine.public_id), "current": str(mine.public_id)}).content.decode()
    hidden = browser.get(url, {"conversation": str(theirs.public_id)}).content.decode()
    bad = browser.get(url, {"conversation": "not-an-id"})

    assert entry.count('<li class="conv') == 1 and "Plan a weekend in Bergen" in entry and "Load more" not in entry
    assert "Not yours" not in hidden and '<li class="conv ' not in hidden and 'class="conv"' not in hidden
    assert bad.status_code == 400
