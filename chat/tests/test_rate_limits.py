"""Rate limits: frames per socket, conversations per user, sockets per user, API requests per
user (all their tokens together), sign-ups per IP. Over a limit the client is told when to
retry; the socket stays open unless it keeps flooding."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import Conversation
from chat.tests.api_helpers import api_client, token_for
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
