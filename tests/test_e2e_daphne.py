"""End to end: a real daphne on a free loopback port, a real WebSocket client, a real
signed-in session cookie; the rule-based scripted model stands in for the LLM."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import re

import pytest
import websockets
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from websockets.asyncio.client import connect

from agents_app import history
from agents_app.session import DjangoSession
from chat.models import Conversation, Message
from tests.clients import session_cookie
from tests.servers import dockerfile_daphne_options, running_daphne

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


def _sign_up(server, *, source: str, email: str, forwarded_for: str) -> int:
    """One sign-up over HTTP from the loopback address `source`, as a new browser would."""
    def conn() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(source, 0))

    page = conn()
    page.request("GET", "/accounts/signup/")
    response = page.getresponse()
    response.read()
    csrf = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "").group(1)
    form = f"csrfmiddlewaretoken={csrf}&email={email}&password1=a-long-passphrase-42&password2=a-long-passphrase-42"
    post = conn()
    post.request("POST", "/accounts/signup/", form, {
        "Cookie": f"csrftoken={csrf}", "Content-Type": "application/x-www-form-urlencoded",
        "X-Forwarded-For": forwarded_for,
    })
    status = post.getresponse().status
    post.close()
    return status


def test_sign_ups_with_a_made_up_forwarded_for_count_against_the_real_address(tmp_path):
    # An address of our own on loopback: the count starts at zero even where Redis keeps counts
    # of earlier runs.
    source = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    with running_daphne(tmp_path, options=dockerfile_daphne_options(), extra_env={"RATE_LIMIT_SIGNUPS": "3/h/ip"}) as server:
        statuses = [
            _sign_up(server, source=source, email=f"spoof{i}@example.com", forwarded_for=f"203.0.113.{i + 1}")
            for i in range(6)
        ]

    assert statuses == [302, 302, 302, 429, 429, 429]
    assert get_user_model().objects.filter(email__startswith="spoof").count() == 3
