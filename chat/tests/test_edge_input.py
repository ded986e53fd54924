"""Bad input at the edges, on both transports: every malformed socket frame gets an `error`
and the socket stays usable; every malformed HTTP request gets the documented JSON error, never
a 500. Each case here once closed the socket (1011) or answered a 500 page."""

from __future__ import annotations

import json

import pytest

from chat.models import Conversation, Message, Run
from chat.tests.api_helpers import api_client, token_for
from chat.tests.helpers import connect, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

# 60 KB of nested arrays: the JSON parser itself recurses too deep.
DEEP_ARRAYS = "[" * 30_000 + "]" * 30_000
# Parses fine, but deep enough that printing or walking it recursively would blow the stack.
NESTED_TYPE = '{"type": ' + "[" * 900 + "]" * 900 + "}"


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


MALFORMED_FRAMES = [
    ('{"type": ["ping"]}', "unknown_type"),
    ('{"type": {"a": 1}}', "unknown_type"),
    ('{"type": null}', "unknown_type"),
    (DEEP_ARRAYS, "bad_frame"),
    ('{"type": "ping", "pad": ' + "[" * 20_000 + "]" * 20_000 + "}", "bad_frame"),
    (NESTED_TYPE, "bad_frame"),
    ('{"type": "message.send", "conversation": "CONV", "content": "hi \\ud800 there"}', "invalid_field"),
    ('{"type": "message.send", "conversation": "CONV", "content": "nul \\u0000 here"}', "invalid_field"),
    ('{"type": "conversation.create", "agent": "assistant\\u0000"}', "invalid_field"),
    ('{"type": "approval.decide", "conversation": "CONV", "call_id": "c\\udfff", "approve": true}', "invalid_field"),
    ('{"type": "approval.decide", "conversation": "CONV", "call_id": "c1", "approve": false, "reason": "\\u0000"}', "invalid_field"),
    ('{"type": "conversation.open", "conversation": "CONV", "seq": 1000000000000000000000000000000}', "invalid_field"),
    ('{"type": "conversation.open", "conversation": "CONV", "seq": 1e400}', "invalid_field"),
    ('{"type": "message.send", "conversation": "CONV", "content": NaN}', "invalid_field"),
    ('{"type": "ping", "request_id": ' + "9" * 5000 + "}", "bad_json"),
    ('"\\ud800"', "bad_frame"),
]


async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(user, conversation, settings):
    settings.RATE_LIMIT_SOCKET_FRAMES = ""  # two frames per case, faster than a person types
    ws = await connect(user)
    answers = []
    for frame, code in MALFORMED_FRAMES:
        await ws.send_to(text_data=frame.replace("CONV", str(conversation.public_id)))
        error = await ws.receive_json_from(timeout=10)
        await ws.send_json_to({"type": "ping", "request_id": "still-there"})
        answers.append((frame[:60], code, error, await ws.receive_json_from(timeout=10)))
    await ws.disconnect()

    for frame, code, error, pong in answers:
        assert error["type"] == "error" and error["code"] == code, (frame, error)
        assert 0 < len(error["message"]) <= 200, (frame, error)
        assert pong == {"type": "pong", "request_id": "still-there"}, frame
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_error_messages_never_echo_a_huge_value(user):
    ws = await connect(user)
    await ws.send_json_to({"type": "x" * 60_000})
    unknown = await ws.receive_json_from()
    await ws.send_json_to({"type": "conversation.create", "agent": "y" * 60_000})
    agent = await ws.receive_json_from()
    await ws.send_json_to({"type": "message.send", "conversation": "z" * 60_000, "content": "hi"})
    conversation = await ws.receive_json_from()
    await ws.disconnect()

    assert unknown["code"] == "unknown_type" and len(unknown["message"]) <= 200
    assert agent["code"] == "invalid_field" and len(agent["message"]) <= 200
    assert conversation["code"] == "invalid_field" and "conversation" not in conversation


async def test_a_request_id_that_cannot_be_stored_is_dropped_and_the_message_still_runs(user, conversation):
    ws = await connect(user)
    await ws.send_json_to({"type": "ping", "request_id": "bad \ud800 id"})
    pong = await ws.receive_json_from()
    await ws.send_json_to(
        {"type": "message.send", "conversation": str(conversation.public_id), "content": "Hi", "request_id": "a\x00b"}
    )
    events = await receive_until(ws, "run.finished")
    await ws.disconnect()

    assert pong == {"type": "pong", "request_id": None}
    assert events[-1]["status"] == "completed"
    run = await Run.objects.aget(conversation=conversation)
    assert "\x00" not in run.request_id and run.request_id


# --- HTTP ---------------------------------------------------------------------------
@pytest.fixture
async def api(user):
    return api_client(await token_for(user))


def error_of(response) -> tuple[int, str]:
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.status_code, json.loads(response.content)["error"]["code"]


BAD_LIST_QUERIES = [
    "limit=²", "limit=٣", "offset=²", f"offset={10**20}", "limit=" + "9" * 5000, "limit=-1", "limit=1.5", "limit=0", "offset= 1",
]
BAD_RESUME_POSITIONS = [
    ("after=²", {}),
    (f"after={10**20}", {}),
    ("", {"Last-Event-ID": "²"}),
    ("", {"Last-Event-ID": str(10**30)}),
    ("", {"Last-Event-ID": "-3"}),
]
BAD_BODIES = [
    ("", DEEP_ARRAYS, (400, "bad_frame")),
    ("", '{"agent": ' + "[" * 20_000 + "]" * 20_000 + "}", (400, "bad_frame")),
    ("", '{"agent": "assistant\\u0000"}', (400, "invalid_field")),
    ("", '{"agent": "' + "a" * 65 + '"}', (400, "invalid_field")),
    ("", b'{"agent": "\xff\xfe"}', (400, "bad_json")),
    ("/CONV/messages", '{"content": "hello \\ud800"}', (400, "invalid_field")),
    ("/CONV/messages", '{"content": "hello \\u0000"}', (400, "invalid_field")),
    ("/CONV/approvals/c1", '{"approve": true, "reason": "\\udc00"}', (400, "invalid_field")),
    ("/CONV/approvals/c1", '{"approve": true, "reason": false}', (400, "invalid_field")),
    ("/CONV/approvals/c%00", '{"approve": true}', (404, "not_found")),
]


async def test_bad_list_parameters_are_400_invalid_field(api):
    for query in BAD_LIST_QUERIES:
        response = await api.get(f"/api/conversations?{query}")
        assert error_of(response) == (400, "invalid_field"), query
        assert len(json.loads(response.content)["error"]["message"]) <= 200


async def test_bad_resume_positions_are_400_invalid_field(api, conversation):
    for query, headers in BAD_RESUME_POSITIONS:
        response = await api.get(f"/api/conversations/{conversation.public_id}/events?{query}", headers=headers)
        assert error_of(response) == (400, "invalid_field"), (query, headers)


async def test_bad_bodies_get_the_documented_json_error_and_store_nothing(api, conversation):
    for tail, body, expected in BAD_BODIES:
        path = "/api/conversations" + tail.replace("CONV", str(conversation.public_id))
        response = await api.post(path, body, content_type="application/json")
        assert error_of(response) == expected, (tail, body[:80])
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert await Conversation.objects.filter(owner=conversation.owner).acount() == 1


async def test_an_unusable_request_id_is_dropped_and_the_message_is_accepted(api, conversation):
    response = await api.post(
        f"/api/conversations/{conversation.public_id}/messages", '{"content": "hi", "request_id": 1e999}', content_type="application/json"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    async for _ in response.streaming_content:
        pass
    assert await Message.objects.filter(conversation=conversation, role="assistant", status="completed").aexists()


async def test_any_other_path_under_the_api_is_a_json_404_even_with_a_newline(api):
    for path in ("/api/conversations/null,null", "/api/x%0Ay", "/api/conversations/%0A/messages", "/api/"):
        assert error_of(await api.get(path)) == (404, "not_found"), path
