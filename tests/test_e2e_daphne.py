"""End to end: a real daphne on a free loopback port, a real WebSocket client, a real
signed-in session cookie; the rule-based scripted model stands in for the LLM."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from asgiref.sync import async_to_sync
from websockets.asyncio.client import connect

from agents_app import history
from agents_app.session import DjangoSession
from chat.models import Conversation, Message
from tests.clients import session_cookie
from tests.servers import running_daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def receive_until(ws, kind: str, *, timeout: float = 15) -> list[dict]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        events.append(event)
        if event["type"] == kind:
            return events


def test_signed_in_client_gets_a_streamed_reply_with_live_tool_events(user, tmp_path):
    cookie = session_cookie(user)

    async def chat(server):
        async with connect(server.ws, additional_headers={"Cookie": cookie}, origin=server.http) as ws:
            await ws.send(json.dumps({"type": "conversation.create", "agent": "assistant", "request_id": "c"}))
            created = json.loads(await ws.recv())
            conversation = created["conversation"]
            await ws.send(json.dumps({"type": "message.send", "conversation": conversation, "content": "What time is it?"}))
            first = await receive_until(ws, "run.finished")
            await ws.send(json.dumps({"type": "message.send", "conversation": conversation, "content": "Thanks!"}))
            second = await receive_until(ws, "run.finished")
            return conversation, first, second

    with running_daphne(tmp_path) as server:
        conversation_id, first, second = asyncio.run(chat(server))

    kinds = [e["type"] for e in first]
    assert kinds.index("tool.called") < kinds.index("tool.output") < kinds.index("message.completed")
    called = next(e for e in first if e["type"] == "tool.called")
    output = next(e for e in first if e["type"] == "tool.output")
    assert called["name"] == "get_current_time" and output["call_id"] == called["call_id"]
    deltas = [e["delta"] for e in first if e["type"] == "message.delta"]
    assert len(deltas) > 2 and "".join(deltas).startswith("The tool answered:")
    assert first[-1]["status"] == "completed" and second[-1]["status"] == "completed"
    # The follow-up was answered with the first turn in memory.
    assert "What time is it?" in next(e for e in second if e["type"] == "message.completed")["content"]

    conversation = Conversation.objects.get(public_id=conversation_id, owner=user)
    replies = list(conversation.messages.filter(role="assistant"))
    assert [m.status for m in replies] == ["completed", "completed"]
    assert all(m.total_tokens > 0 and m.model == "scripted" for m in replies)
    items = async_to_sync(DjangoSession(conversation.session_id).get_items)()
    assert history.problems(items) == [] and len(items) == 6


def test_cross_origin_and_anonymous_sockets_are_refused(user, tmp_path):
    cookie = session_cookie(user)

    async def attempts(server):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws, additional_headers={"Cookie": cookie}, origin="http://evil.example"):
                pass
        async with connect(server.ws, origin=server.http) as anonymous:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(anonymous.recv(), 5)
        return refused.value.response.status_code, closed.value.rcvd.code

    with running_daphne(tmp_path) as server:
        status, close_code = asyncio.run(attempts(server))

    assert status == 403
    assert close_code == 4401
    assert not Message.objects.exists()
