"""The HTTP API (`/api/`) for non-browser clients, driven with Django's async test client (and
the real ASGI handler where a disconnect matters) on the real database and channel layer; only
the model is scripted."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from agents import function_tool
from agents.testing import assistant_message, function_call
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.test import AsyncClient
from django.utils import timezone

from accounts.services import api_token_create, api_token_revoke
from agents_app.models import AgentSession
from chat import api as chat_api
from chat.engine import follow, runs
from chat.engine.process import engine
from chat.models import Conversation, Message, Run
from chat.tests.api_helpers import SseReader, api_client, events, parse_sse, token_for
from chat.tests.factories import ReplyFactory, RunFactory, finished_reply
from chat.tests.helpers import (
    connect,
    extra_tools,
    of_type,
    receive_until,
    send_message,
)
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripted(settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"  # a provider is configured; the model itself is the script


@pytest.fixture
async def token(user):
    return await token_for(user)


@pytest.fixture
async def api(token):
    return api_client(token)


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


def url(conversation, tail: str = "") -> str:
    return f"/api/conversations/{conversation.public_id}{tail}"


async def post_json(client: AsyncClient, path: str, payload, **extra):
    body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return await client.post(path, body, content_type="application/json", **extra)


async def send(api, conversation, content="Hello", **fields):
    response = await post_json(api, url(conversation, "/messages"), {"content": content, **fields})
    return response


def error_of(response) -> tuple[int, str]:
    return response.status_code, json.loads(response.content)["error"]["code"]


# --- authentication ----------------------------------------------------------------
async def test_requests_without_a_valid_token_are_401_even_with_a_signed_in_session(user):
    session_client = AsyncClient()
    await session_client.aforce_login(user)
    response = await session_client.get("/api/conversations")
    assert error_of(response) == (401, "unauthorized")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'

    created = await sync_to_async(api_token_create)(owner=user, name="old")
    await sync_to_async(api_token_revoke)(token=created.token)
    for header in (f"Bearer {created.secret}", "Bearer ac_0000000000_nope", "Bearer garbage"):
        response = await AsyncClient().get("/api/agents", headers={"Authorization": header})
        assert error_of(response) == (401, "unauthorized"), header
        assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    response = await AsyncClient().get("/api/agents", headers={"Authorization": f"Basic {created.secret}"})
    assert error_of(response) == (401, "unauthorized")


MALFORMED_TOKENS = [
    "é", "ac_0123456789_é", "ac_ééééééééé_x", "ac_0123456789_" + "ÿ" * 43, "\x00\x1f", "ac_0123456789_\x00", "x" * 20000,
]


@pytest.mark.parametrize("malformed", MALFORMED_TOKENS)
async def test_a_malformed_token_is_a_401_that_shows_nothing(user, settings, malformed):
    settings.DEBUG = True  # a 500 would be the DEBUG page, listing the request and its variables
    real = await token_for(user)
    response = await AsyncClient(raise_request_exception=False).get(
        "/api/agents", headers={"Authorization": f"Bearer {malformed}"}
    )
    assert error_of(response) == (401, "unauthorized")
    assert real not in response.content.decode()


async def test_a_token_request_ignores_the_session_and_needs_no_csrf_token(user, other_user, token):
    # A browser session of another user on the same client changes nothing: the token decides.
    client = api_client(token, enforce_csrf_checks=True)
    await client.aforce_login(other_user)
    response = await post_json(client, "/api/conversations", {"agent": "assistant"})
    assert response.status_code == 201
    created = json.loads(response.content)["conversation"]
    assert await Conversation.objects.filter(public_id=created["id"], owner=user).aexists()


# --- conversations -------------------------------------------------------------------
async def test_agents_lists_the_registry(api):
    response = await api.get("/api/agents")
    agents = json.loads(response.content)["agents"]
    assert response.status_code == 200
    assert {"key": "assistant", "title": "Assistant"}.items() <= next(a for a in agents if a["key"] == "assistant").items()
    assert all(set(a) == {"key", "title", "description", "model", "agents", "tools", "guardrails"} for a in agents)
    assert {a["model"] for a in agents} == {"default"}  # no AGENTS_MODELS: one model
    support = next(a for a in agents if a["key"] == "support")
    assert {"search_knowledge_base", "create_support_ticket"} <= set(support["tools"])
    assert {"secret leak", "unbacked claim", "prompt injection"} <= set(support["guardrails"])
    tutor = next(a for a in agents if a["key"] == "tutor")
    assert tutor["agents"] == ["Tutor Triage", "Math Tutor", "History Tutor"]  # the triage hands off


async def test_conversations_are_created_listed_and_read_per_user(api, user, other_user):
    response = await post_json(api, "/api/conversations", {"agent": "assistant"})
    assert response.status_code == 201
    created = json.loads(response.content)["conversation"]
    assert created["agent"] == "assistant" and created["current_agent"] == "Assistant"
    theirs = await Conversation.objects.acreate(owner=other_user, agent_key="assistant")
    await sync_to_async(finished_reply)(conversation=theirs)

    listed = json.loads((await api.get("/api/conversations")).content)
    assert [c["id"] for c in listed["conversations"]] == [created["id"]] and listed["next_offset"] is None

    detail = await api.get(f"/api/conversations/{created['id']}")
    assert detail.status_code == 200
    body = json.loads(detail.content)
    assert body["conversation"]["id"] == created["id"] and body["conversation"]["run"] is None and body["messages"] == []

    # Someone else's conversation does not exist, whatever the verb.
    for method, tail, payload in [
        ("get", "", None),
        ("post", "/messages", {"content": "hi"}),
        ("get", "/events", None),
        ("post", "/cancel", {}),
        ("post", "/approvals/call_1", {"approve": True}),
    ]:
        if method == "get":
            response = await api.get(url(theirs, tail))
        else:
            response = await post_json(api, url(theirs, tail), payload)
        assert error_of(response) == (404, "not_found"), tail
    assert await Message.objects.filter(conversation=theirs).acount() == 1  # untouched
    assert error_of(await api.get("/api/conversations/not-a-uuid")) == (404, "not_found")
    assert error_of(await api.get("/api/nothing/here")) == (404, "not_found")


async def test_conversation_list_pages(api, user):
    for _ in range(3):
        await Conversation.objects.acreate(owner=user, agent_key="assistant")
    first = json.loads((await api.get("/api/conversations?limit=2")).content)
    second = json.loads((await api.get(f"/api/conversations?limit=2&offset={first['next_offset']}")).content)
    assert len(first["conversations"]) == 2 and first["next_offset"] == 2
    assert len(second["conversations"]) == 1 and second["next_offset"] is None
    assert error_of(await api.get("/api/conversations?limit=-1")) == (400, "invalid_field")


async def test_conversation_detail_has_messages_with_status_content_usage_and_cost(api, user, conversation):
    await Message.objects.acreate(conversation=conversation, role="user", content="Hi")
    reply = await sync_to_async(finished_reply)(conversation=conversation)
    run = await Run.objects.aget(pk=reply.run_id)
    body = json.loads((await api.get(url(conversation))).content)
    question, answer = body["messages"]
    assert question["role"] == "user" and question["content"] == "Hi" and question["usage"] is None
    assert answer == {
        **answer,
        "id": str(reply.public_id),
        "role": "assistant",
        "status": "completed",
        "content": "Hello there.",
        "run": str(run.public_id),
    }
    assert answer["usage"] == {**answer["usage"], "model": "gpt-4.1-mini", "total_tokens": 49, "cost": "0.00002800"}


async def test_invalid_input_gets_400_with_the_sockets_codes(api, conversation, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    settings.CHAT_MAX_FRAME_BYTES = 200
    cases = [
        (("/api/conversations", {"agent": "nope"}), (400, "unknown_agent")),
        (("/api/conversations", {}), (400, "missing_field")),
        (("/api/conversations", {"agent": 3}), (400, "invalid_field")),
        (("/api/conversations", "{nope"), (400, "bad_json")),
        (("/api/conversations", "[1]"), (400, "bad_frame")),
        ((url(conversation, "/messages"), {"content": "   "}), (400, "empty_content")),
        ((url(conversation, "/messages"), {"content": "x" * 11}), (400, "too_long")),
        ((url(conversation, "/messages"), {"content": "x" * 300}), (413, "too_large")),
        ((url(conversation, "/approvals/c1"), {"approve": "yes"}), (400, "invalid_field")),
    ]
    for (path, payload), expected in cases:
        response = await post_json(api, path, payload)
        assert error_of(response) == expected, (path, payload)
    message = json.loads((await post_json(api, url(conversation, "/messages"), {"content": "x" * 11})).content)["error"]["message"]
    assert message == "The message is 11 characters; the limit is 10."
    assert error_of(await api.delete("/api/conversations")) == (405, "method_not_allowed")
    assert not await Message.objects.filter(conversation=conversation).aexists()


# --- streaming -------------------------------------------------------------------------
async def test_message_streams_the_run_as_sse_and_the_reply_is_stored(api, conversation, script):
    with script([streamed("Hel", "lo ", "there.")]):
        response = await send(api, conversation, "Hi!", request_id="r-api")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/event-stream") and response["Cache-Control"] == "no-cache"
        messages = await SseReader(response.streaming_content).rest()

    received = events(messages)
    assert [m.event for m in messages] == [e["type"] for e in received]
    assert [m.id for m in messages] == [str(e["seq"]) for e in received]
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
    assert received[0] == {**received[0], "type": "message.created", "content": "Hi!", "request_id": "r-api"}
    assert [e["delta"] for e in of_type(received, "message.delta")] == ["Hel", "lo ", "there."]
    assert [e["type"] for e in received[-3:]] == ["message.completed", "usage", "run.finished"]
    assert received[-1]["status"] == "completed"

    reply = await Message.objects.aget(public_id=received[-3]["message"])
    assert reply.status == "completed" and reply.content == "Hello there." and reply.total_tokens == 49
    detail = json.loads((await api.get(url(conversation))).content)
    assert [m["content"] for m in detail["messages"]] == ["Hi!", "Hello there."]
    assert detail["messages"][1]["usage"]["cost"] == str(reply.cost)


def _comparable(event: dict) -> dict:
    """An event without what differs between two runs of the same script (ids, timings)."""
    volatile = {"conversation", "run", "message", "request_id", "duration_ms", "time_to_first_token_ms"}
    return {k: v for k, v in event.items() if k not in volatile}


@function_tool
def lookup_note(topic: str) -> str:
    """Look up a note.

    Args:
        topic: What the note is about.
    """
    return f"Two notes about {topic}."


async def test_sse_stream_carries_the_same_events_as_the_socket(api, user, script):
    def steps():
        return [[function_call("lookup_note", {"topic": "sse"}, call_id="call_n")], streamed("Found ", "two ", "notes.")]

    by_socket = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    by_http = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with extra_tools("assistant", lookup_note):
        with script(steps()):
            ws = await connect(user)
            await send_message(ws, by_socket, "Any notes?", request_id="same")
            socket_events = await receive_until(ws, "run.finished")
            await ws.disconnect()
        with script(steps()):
            response = await send(api, by_http, "Any notes?", request_id="same")
            http_events = events(await SseReader(response.streaming_content).rest())

    assert [e["type"] for e in http_events] == [e["type"] for e in socket_events]
    assert "tool.called" in [e["type"] for e in http_events] and "tool.output" in [e["type"] for e in http_events]
    assert [_comparable(e) for e in http_events] == [_comparable(e) for e in socket_events]
    assert [set(e) for e in http_events] == [set(e) for e in socket_events]
    assert of_type(http_events, "message.completed")[0]["content"] == "Found two notes."


async def test_resume_with_last_event_id_continues_without_gap_or_duplicate(api, conversation, script):
    gate = asyncio.Event()
    with script([streamed("one ", "two ", "three ", "four.", gate=gate, after=2)]):
        response = await send(api, conversation)
        first = SseReader(response.streaming_content)
        seen = await first.until("message.delta")
        seen += await first.until("message.delta")
        await first.chunks.aclose()  # the client goes away mid-reply
        run_id = seen[0].data["run"]

        resumed = await api.get(url(conversation, f"/events?run={run_id}"), headers={"Last-Event-ID": seen[-1].id})
        assert resumed.status_code == 200
        reader = SseReader(resumed.streaming_content)
        gate.set()
        rest = await reader.rest()

    seqs = [int(m.id) for m in seen + rest if m.id]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(e["delta"] for e in events(seen + rest) if e["type"] == "message.delta")
    assert text == "one two three four." and rest[-1].event == "run.finished"


async def test_events_query_after_replays_a_finished_run_and_then_ends(api, conversation, script):
    with script([streamed("Done.")]):
        full = events(await SseReader((await send(api, conversation)).streaming_content).rest())
    run_id = full[0]["run"]

    tail = await api.get(url(conversation, f"/events?run={run_id}&after=2"))
    assert [e["seq"] for e in events(await SseReader(tail.streaming_content).rest())] == [e["seq"] for e in full[2:]]
    # Everything seen: 204 (an EventSource stops reconnecting); nothing active: 204 too.
    assert (await api.get(url(conversation, f"/events?run={run_id}&after={full[-1]['seq']}"))).status_code == 204
    assert (await api.get(url(conversation, "/events"))).status_code == 204
    assert error_of(await api.get(url(conversation, "/events?run=nope"))) == (404, "not_found")
    assert error_of(await api.get(url(conversation, "/events?after=x"))) == (400, "invalid_field")


async def test_finished_run_whose_buffer_expired_answers_410(api, conversation):
    run = await sync_to_async(RunFactory)(conversation=conversation, last_seq=9)
    response = await api.get(url(conversation, f"/events?run={run.public_id}&after=3"))
    assert error_of(response) == (410, "events_expired")


async def test_events_without_run_follow_the_active_run_from_its_start(api, conversation, script):
    gate = asyncio.Event()
    with script([streamed("a", "b", gate=gate)]):
        started = SseReader((await send(api, conversation)).streaming_content)
        await started.until("message.delta")
        follower = await api.get(url(conversation, "/events"), headers={"Last-Event-ID": "999"})
        reader = SseReader(follower.streaming_content)
        gate.set()
        followed = await reader.rest()
        await started.rest()
    assert [int(m.id) for m in followed if m.id] == list(range(1, len([m for m in followed if m.id]) + 1))


async def test_stream_sends_keepalive_comments_while_the_model_is_silent(api, conversation, script, settings):
    settings.RUN_KEEPALIVE_SECONDS = 0.05
    gate = asyncio.Event()
    with script([streamed("a", "b", gate=gate)]):
        reader = SseReader((await send(api, conversation)).streaming_content)
        await reader.until("message.delta")
        comment = await reader.next()
        gate.set()
        rest = await reader.rest()
    assert comment.comment == "keep-alive" and comment.data is None
    assert rest[-1].event == "run.finished"


@pytest.mark.parametrize("ended_by", ["its-own-process", "a-dead-process"])
async def test_a_stream_whose_run_ends_unheard_ends_with_the_outcome_as_stored(api, conversation, settings, ended_by):
    """The run's end is committed before its end events go out (under load that gap grows),
    and a run whose process died publishes none: the stream still ends with how it ended."""
    settings.RUN_KEEPALIVE_SECONDS = 0.05
    run = await sync_to_async(RunFactory)(
        conversation=conversation, status=Run.Status.RUNNING, finished_at=None, heartbeat_at=timezone.now()
    )
    reply = await sync_to_async(ReplyFactory)(conversation=conversation, run=run, status=Message.Status.STREAMING, content="Half a")
    reader = SseReader((await api.get(url(conversation, f"/events?run={run.public_id}"))).streaming_content)
    assert (await reader.next()).comment == "keep-alive"  # following: the run is alive
    if ended_by == "its-own-process":  # what run_finish commits, before the events are published
        await Run.objects.filter(pk=run.pk).aupdate(status=Run.Status.COMPLETED, finished_at=timezone.now(), last_seq=3)
        await Message.objects.filter(pk=reply.pk).aupdate(status=Message.Status.COMPLETED, content="Half a loaf.")
    else:
        await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))
    ending = [m for m in await reader.rest() if m.event]

    assert [m.event for m in ending] == ["message.completed", "usage", "run.finished"]
    assert [int(m.id) for m in ending] == [1, 2, 3]
    finished, completed = ending[-1].data, ending[0].data
    if ended_by == "its-own-process":
        assert finished["status"] == "completed" and completed["content"] == "Half a loaf."
    else:
        assert finished["status"] == "interrupted" and completed["status"] == "failed"
        assert (await Run.objects.aget(pk=run.pk)).status == Run.Status.INTERRUPTED
    assert finished["run"] == str(run.public_id)


async def test_client_disconnecting_mid_stream_does_not_stop_the_run(user, token, conversation, script):
    """Through Django's real ASGI handler: `http.disconnect` cancels the response, not the run."""
    from config.asgi import application

    gate = asyncio.Event()
    body = json.dumps({"content": "Tell me a story"}).encode()
    with script([streamed("Once ", "upon ", "a time.", gate=gate)]):
        app = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": url(conversation, "/messages"),
                "raw_path": url(conversation, "/messages").encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"host", b"127.0.0.1"),
                    (b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 80),
            },
        )
        await app.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await app.receive_output(10)
        assert start["status"] == 200

        async def chunks():
            while True:
                message = await app.receive_output(10)
                yield message.get("body", b"")

        reader = SseReader(chunks())
        first = await reader.until("message.delta")
        run_id = first[0].data["run"]
        await app.send_input({"type": "http.disconnect"})
        # The handler finishes promptly (it does not wait for the run, nor for the layer).
        await asyncio.wait_for(asyncio.shield(app.future), 3)
        assert not await Run.objects.filter(public_id=run_id, status=Run.Status.COMPLETED).aexists()
        gate.set()
        await asyncio.wait_for(runs.wait_for_run(run_id), 10)

    run = await Run.objects.aget(public_id=run_id)
    reply = await Message.objects.aget(run=run, role="assistant")
    assert run.status == Run.Status.COMPLETED
    assert reply.status == "completed" and reply.content == "Once upon a time."
    layer = get_channel_layer()
    if hasattr(layer, "groups"):  # the in-memory layer: the stream left the group
        assert not layer.groups.get(conversation.group_name)


# --- refusals --------------------------------------------------------------------------
async def test_second_message_while_a_run_is_active_is_409_busy(api, conversation, script):
    gate = asyncio.Event()
    with script([streamed("a", "b", gate=gate)]):
        reader = SseReader((await send(api, conversation)).streaming_content)
        await reader.until("message.delta")
        response = await send(api, conversation, "Again")
        gate.set()
        await reader.rest()
    assert error_of(response) == (409, "busy")
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_over_budget_is_429_with_retry_after_and_nothing_is_stored(api, user, conversation, settings, script):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 40
    await sync_to_async(finished_reply)(owner=user)  # 49 tokens today
    with script([streamed("never")]) as model:
        response = await send(api, conversation)
    status, code = error_of(response)
    assert (status, code) == (429, "quota_exceeded") and int(response["Retry-After"]) > 0
    assert "resets at" in json.loads(response.content)["error"]["message"]
    assert not await Message.objects.filter(conversation=conversation).aexists() and not model.calls


async def test_without_a_configured_model_sending_is_503(api, conversation, settings, monkeypatch):
    settings.AGENTS_MODEL_PROVIDER = ""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    from agents_app import local

    monkeypatch.setattr(local, "is_installed", lambda: False)
    response = await send(api, conversation)
    assert error_of(response) == (503, "provider_not_configured")
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_cancel_stops_the_active_run_and_the_stream_reports_it(api, conversation, script):
    assert error_of(await post_json(api, url(conversation, "/cancel"), {})) == (409, "not_running")
    gate = asyncio.Event()  # never set: only a stop ends this reply
    with script([streamed("Once ", "upon", gate=gate)]):
        reader = SseReader((await send(api, conversation)).streaming_content)
        first = await reader.until("message.delta")
        response = await post_json(api, url(conversation, "/cancel"), {})
        rest = await reader.rest()
    assert response.status_code == 202 and json.loads(response.content)["run"] == first[0].data["run"]
    assert rest[-1].event == "run.finished" and rest[-1].data["status"] == "cancelled"
    assert (await Run.objects.aget(public_id=first[0].data["run"])).status == Run.Status.CANCELLED


# --- approvals ---------------------------------------------------------------------------
refunds: list[str] = []


@function_tool(needs_approval=True)
def refund_order(order_number: str) -> str:
    """Refund an order.

    Args:
        order_number: The order to refund.
    """
    refunds.append(order_number)
    return f"Refunded {order_number}."


async def test_approval_over_http_pauses_then_resumes_the_run(api, conversation, script):
    refunds.clear()
    steps = [
        [assistant_message("Refunding."), function_call("refund_order", {"order_number": "A-1"}, call_id="call_r")],
        streamed("Done: ", "refunded."),
    ]
    with extra_tools("assistant", refund_order), script(steps):
        paused = await SseReader((await send(api, conversation, "Refund A-1")).streaming_content).rest()
        assert [m.event for m in paused[-2:]] == ["approval.requested", "run.paused"]
        assert error_of(await send(api, conversation, "Again")) == (409, "approval_pending")
        assert error_of(await post_json(api, url(conversation, "/approvals/nope"), {"approve": True})) == (404, "not_found")

        decided = await post_json(api, url(conversation, "/approvals/call_r"), {"approve": True, "reason": "ok"})
        body = json.loads(decided.content)
        run_id = paused[0].data["run"]
        assert decided.status_code == 200 and body == {
            "approval": {"call_id": "call_r", "status": "approved", "reason": "ok"},
            "run": run_id,
            "pending": [],
        }
        resumed = await api.get(url(conversation, f"/events?run={run_id}"), headers={"Last-Event-ID": paused[-1].id})
        rest = await SseReader(resumed.streaming_content).rest()
        await asyncio.wait_for(runs.wait_for_run(run_id), 10)
        again = await post_json(api, url(conversation, "/approvals/call_r"), {"approve": False})

    assert rest[0].event == "approval.resolved" and int(rest[0].id) == int(paused[-1].id) + 1
    seqs = [int(m.id) for m in paused + rest if m.id]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1].event == "run.finished" and rest[-1].data["status"] == "completed"
    assert refunds == ["A-1"]
    assert error_of(again) == (409, "already_decided")


async def as_served(request):
    """A request that waits for a run, handled as daphne does (Django's ASGIHandler gives each
    request a ThreadSensitiveContext): the test client has none, so the request's sync
    middleware would hold the one thread the run's database work needs until it returned."""
    async with ThreadSensitiveContext():
        return await request


async def test_a_message_sent_for_json_waits_for_the_run_and_answers_the_stored_reply(api, conversation, script):
    with script([streamed("Hello ", "back.")]):
        response = await as_served(
            post_json(api, url(conversation, "/messages"), {"content": "Hi"}, headers={"Accept": "application/json"})
        )
    with script([streamed("Again.")]):
        query = await as_served(post_json(api, url(conversation, "/messages?stream=0"), {"content": "Once more"}))

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["message"]["content"] == "Hello back." and body["message"]["status"] == "completed"
    assert body["message"]["usage"]["total_tokens"] > 0
    assert body["run"]["status"] == "completed" and body["run"]["approvals"] == []
    assert json.loads(query.content)["message"]["content"] == "Again."
    stored = await Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at").alast()
    assert str(stored.public_id) == json.loads(query.content)["message"]["id"]


async def test_a_json_run_that_pauses_for_approval_answers_202_with_what_it_waits_for(api, conversation, script):
    refunds.clear()
    steps = [[function_call("refund_order", {"order_number": "A-1"}, call_id="call_r")], streamed("Refunded.")]
    with extra_tools("assistant", refund_order), script(steps):
        response = await as_served(
            post_json(api, url(conversation, "/messages"), {"content": "Refund A-1"}, headers={"Accept": "application/json"})
        )
        body = json.loads(response.content)
        decided = await post_json(api, url(conversation, "/approvals/call_r"), {"approve": True})
        await asyncio.wait_for(runs.wait_for_run(body["run"]["id"]), 10)

    assert response.status_code == 202 and body["message"]["status"] == "awaiting_approval"
    assert [(a["call_id"], a["name"]) for a in body["run"]["approvals"]] == [("call_r", "refund_order")]
    assert decided.status_code == 200 and refunds == ["A-1"]


async def test_delete_removes_a_conversation_with_its_history_for_its_owner_only(api, user, other_user, conversation, script):
    with script([streamed("Hi.")]):
        await as_served(post_json(api, url(conversation, "/messages?stream=0"), {"content": "Hello"}))
    theirs = await Conversation.objects.acreate(owner=other_user, agent_key="assistant")

    assert error_of(await api.delete(f"/api/conversations/{theirs.public_id}")) == (404, "not_found")
    response = await api.delete(url(conversation))
    assert response.status_code == 204
    assert error_of(await api.get(url(conversation))) == (404, "not_found")
    assert not await Message.objects.filter(conversation_id=conversation.pk).aexists()
    assert not await AgentSession.objects.filter(session_id=conversation.session_id).aexists()
    assert await Conversation.objects.filter(pk=theirs.pk).aexists()


async def test_delete_during_a_reply_stops_it_first_and_answers_once_it_is_gone(api, conversation):
    first = SseReader((await send(api, conversation, "Tell me a story [[stall]]")).streaming_content)
    await first.until("message.delta")
    response = await as_served(api.delete(url(conversation)))
    rest = await first.rest()

    assert response.status_code == 204
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert not await Run.objects.filter(conversation_id=conversation.pk).aexists()
    assert rest[-1].event == "run.finished" and rest[-1].data["status"] == "cancelled"


# --- the replay buffer helper ------------------------------------------------------------
async def test_buffered_events_are_read_by_seq_not_by_position():
    run_id = f"buffer-test-{uuid.uuid4()}"
    for seq in (7, 8, 9):  # a buffer that (after expiring) starts at seq 7
        await engine.buffer.append(run_id, [{"type": "message.delta", "run": run_id, "seq": seq, "delta": str(seq)}])
    assert [e["seq"] for e in await follow.buffered_events(run_id, after=7)] == [8, 9]


def test_sse_message_format():
    text = chat_api.sse_message({"type": "message.delta", "seq": 3, "delta": "a\nb"})
    assert text == 'id: 3\nevent: message.delta\ndata: {"type":"message.delta","seq":3,"delta":"a\\nb"}\n\n'
    assert parse_sse(chat_api.sse_message({"type": "approval.decided", "run": "r"}))[0].id is None


async def test_a_stream_parameter_that_is_not_a_yes_or_no_is_refused_and_nothing_is_stored(api, conversation):
    response = await post_json(api, url(conversation, "/messages?stream=maybe"), {"content": "Hi"})
    assert error_of(response) == (400, "invalid_field")
    assert not await Message.objects.filter(conversation=conversation).aexists()
