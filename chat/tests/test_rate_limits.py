"""Rate limits: socket frames per user (all their sockets together), conversations per user,
sockets and event streams per user, API requests per user (all their tokens together), sign-ups
per IP. Over a limit the client is told when to retry; the socket stays open unless it keeps
flooding."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.test import Client
from django.utils import timezone

from chat.models import Conversation, Message, Run
from chat.tests.api_helpers import SseReader, api_client, token_for
from chat.tests.factories import ConversationFactory, ReplyFactory, RunFactory
from chat.tests.helpers import connect
from config import ratelimits
from tests.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def limits(settings):
    """Set limits for one test (fresh counts)."""

    def use(**values):
        for name, value in values.items():
            setattr(settings, name, value)
        ratelimits.reset()

    return use


async def test_a_socket_sending_too_fast_is_told_to_retry_and_stays_usable(user, limits):
    limits(RATE_LIMIT_SOCKET_FRAMES="5/second", RATE_LIMIT_SOCKET_REFUSALS="50 per 10 second")
    ws = await connect(user)
    for n in range(8):
        await ws.send_json_to({"type": "ping", "request_id": str(n)})
    answers = [await ws.receive_json_from() for _ in range(8)]

    assert [a["type"] for a in answers] == ["pong"] * 5 + ["error"] * 3
    assert {a["code"] for a in answers[5:]} == {"rate_limited"} and all(a["retry_after"] >= 1 for a in answers[5:])

    async def pong_again():
        await ws.send_json_to({"type": "ping", "request_id": "later"})
        return (await ws.receive_json_from())["type"] == "pong"

    assert await eventually(pong_again, timeout=5, interval=0.3)
    await ws.disconnect()


async def test_a_socket_that_keeps_flooding_is_closed(user, limits):
    limits(RATE_LIMIT_SOCKET_FRAMES="5/second", RATE_LIMIT_SOCKET_REFUSALS="10 per 10 second")
    ws = await connect(user)
    for n in range(40):
        await ws.send_json_to({"type": "ping", "request_id": str(n)})
    outputs = []
    while (output := await ws.receive_output(5))["type"] != "websocket.close":
        outputs.append(output)
    await ws.disconnect()
    assert output["code"] == 4429 and len(outputs) == 5 + 10


async def test_frames_from_all_of_a_users_sockets_are_limited_together(user, other_user, limits):
    limits(RATE_LIMIT_SOCKET_FRAMES="6/minute", RATE_LIMIT_SOCKET_REFUSALS="50 per 10 second")  # no race with the clock
    sockets = [await connect(user) for _ in range(3)]
    for n in range(3):
        for ws in sockets:
            await ws.send_json_to({"type": "ping", "request_id": str(n)})
    answers = [await ws.receive_json_from() for ws in sockets for _ in range(3)]
    other = await connect(other_user)
    await other.send_json_to({"type": "ping"})
    others_answer = await other.receive_json_from()

    assert sorted(a["type"] for a in answers) == ["error"] * 3 + ["pong"] * 6
    assert {a["code"] for a in answers if a["type"] == "error"} == {"rate_limited"}
    assert others_answer["type"] == "pong"  # another user has their own count
    for ws in sockets:  # refused, not closed: the limit alone closes no socket
        assert await ws.receive_nothing()
        await ws.disconnect()
    await other.disconnect()


async def test_conversations_per_user_are_limited_on_the_socket_and_the_api(user, limits):
    limits(RATE_LIMIT_CONVERSATIONS="3/hour")
    ws = await connect(user)
    for _ in range(3):
        await ws.send_json_to({"type": "conversation.create", "agent": "assistant"})
        assert (await ws.receive_json_from())["type"] == "conversation.created"
    await ws.send_json_to({"type": "conversation.create", "agent": "assistant", "request_id": "4th"})
    refused = await ws.receive_json_from()
    await ws.disconnect()

    api = api_client(await token_for(user))
    response = await api.post("/api/conversations", {"agent": "assistant"}, content_type="application/json")

    assert refused == {**refused, "type": "error", "code": "rate_limited", "request_id": "4th"}
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert (await sync_to_async(response.json)())["error"]["code"] == "rate_limited"
    assert await Conversation.objects.filter(owner=user).acount() == 3


async def test_a_user_may_keep_only_so_many_sockets_open(user, limits):
    limits(RATE_LIMIT_SOCKETS_PER_USER=2)
    first, second = await connect(user), await connect(user)
    third = await connect(user)
    refused = await third.receive_json_from()
    closed = await third.receive_output()

    await third.disconnect()
    assert refused["code"] == "rate_limited" and closed == {**closed, "type": "websocket.close", "code": 4429}
    await first.disconnect()
    fourth = await connect(user)  # a slot came free
    await fourth.send_json_to({"type": "ping"})
    assert (await fourth.receive_json_from())["type"] == "pong"
    await second.disconnect()
    await fourth.disconnect()


async def running_run(owner) -> Run:
    """A run in progress (its process alive) in a new conversation of `owner`: something a
    stream can follow for as long as a test needs."""

    def make() -> Run:
        run = RunFactory(
            conversation=ConversationFactory(owner=owner), status=Run.Status.RUNNING, finished_at=None,
            heartbeat_at=timezone.now(),
        )
        ReplyFactory(conversation=run.conversation, run=run, status=Message.Status.STREAMING, content="Half a")
        return run

    return await sync_to_async(make)()


def events_url(run: Run) -> str:
    return f"/api/conversations/{run.conversation.public_id}/events?run={run.public_id}"


async def end_unheard(run: Run, *streams) -> None:
    """The run's process dies: its streams end (from the stored outcome) and are read to the end."""
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))
    for stream in streams:
        assert (await SseReader(stream.streaming_content).rest())[-1].event == "run.finished"


async def test_a_user_may_keep_only_so_many_event_streams_open(user, other_user, limits, settings):
    limits(RATE_LIMIT_STREAMS_PER_USER=2)
    settings.RUN_KEEPALIVE_SECONDS = 0.05  # a stream notices its run's end at once
    api, others_api = api_client(await token_for(user)), api_client(await token_for(other_user))
    followed, waiting, others_run = await running_run(user), await running_run(user), await running_run(other_user)
    first, second = await api.get(events_url(followed)), await api.get(events_url(followed))
    third = await api.get(events_url(waiting))
    idle = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    message = await api.post(
        f"/api/conversations/{idle.public_id}/messages", {"content": "Hello"}, content_type="application/json"
    )
    others = await others_api.get(events_url(others_run))

    assert (first.status_code, second.status_code, others.status_code) == (200, 200, 200)
    for refused in (third, message):  # refused before anything opens or is stored, in the API's error format
        assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
        assert json.loads(refused.content)["error"] == {
            "code": "too_many_streams", "message": "You have 2 event streams open already; close one first.",
        }
    assert not await Message.objects.filter(conversation=idle).aexists()
    assert not await Run.objects.filter(conversation=idle).aexists()

    await end_unheard(followed, first, second)  # the run ends: both its streams give their slots back
    again = await api.get(events_url(waiting))
    assert again.status_code == 200
    await end_unheard(waiting, again)
    await end_unheard(others_run, others)


async def test_a_message_the_run_service_refuses_gives_its_stream_slot_back(user, limits, settings):
    limits(RATE_LIMIT_STREAMS_PER_USER=1)
    settings.RUN_KEEPALIVE_SECONDS = 0.05
    api = api_client(await token_for(user))
    run = await running_run(user)
    busy = await api.post(
        f"/api/conversations/{run.conversation.public_id}/messages", {"content": "Hello"}, content_type="application/json"
    )
    stream = await api.get(events_url(run))

    assert busy.status_code == 409 and json.loads(busy.content)["error"]["code"] == "busy"
    assert stream.status_code == 200
    await end_unheard(run, stream)


async def test_a_stream_the_client_leaves_gives_its_slot_back(user, limits, settings):
    """Through Django's real ASGI handler: `http.disconnect` ends the stream and frees its slot."""
    from config.asgi import application

    limits(RATE_LIMIT_STREAMS_PER_USER=1)
    settings.RUN_KEEPALIVE_SECONDS = 0.05
    token = await token_for(user)
    api = api_client(token)
    run = await running_run(user)
    path, query = events_url(run).split("?")
    app = ApplicationCommunicator(application, {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    })
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await app.receive_output(10))["status"] == 200
    assert b"keep-alive" in (await app.receive_output(10))["body"]  # the stream is under way
    refused = await api.get(events_url(run))
    await app.send_input({"type": "http.disconnect"})
    await app.wait(5)
    reopened = await api.get(events_url(run))

    assert refused.status_code == 429 and json.loads(refused.content)["error"]["code"] == "too_many_streams"
    assert reopened.status_code == 200
    await end_unheard(run, reopened)


async def test_api_requests_are_limited_per_user_across_all_their_tokens(user, other_user, limits):
    limits(RATE_LIMIT_API_REQUESTS="4/minute")
    # Four fresh tokens, one request each: the user's limit, however many tokens they mint.
    tokens = [api_client(await token_for(user, name=f"t{n}")) for n in range(5)]
    statuses = [(await api.get("/api/agents")).status_code for api in tokens[:4]]
    over = await tokens[4].get("/api/agents")

    assert statuses == [200, 200, 200, 200]
    assert over.status_code == 429 and 1 <= int(over["Retry-After"]) <= 60
    assert (await sync_to_async(over.json)())["error"]["code"] == "rate_limited"
    assert (await tokens[0].get("/api/agents")).status_code == 429
    other = api_client(await token_for(other_user))
    assert (await other.get("/api/agents")).status_code == 200  # another user has their own count


def test_sign_ups_per_ip_are_limited(settings, db):
    settings.ACCOUNT_RATE_LIMITS = {"signup": "2/h/ip"}

    def sign_up(n: int) -> int:  # a new browser each time, from the same address
        return Client().post(
            "/accounts/signup/",
            {"email": f"person{n}@example.com", "password1": "a long passphrase 9", "password2": "a long passphrase 9"},
        ).status_code

    assert [sign_up(1), sign_up(2), sign_up(3)] == [302, 302, 429]
