"""End to end for non-browser clients: a real daphne on loopback, plain `http.client` for the
JSON API and its Server-Sent Events, `websockets` with a bearer token and no Origin; the
rule-based scripted model stands in for the LLM."""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import pytest
import websockets
from websockets.asyncio.client import connect

from accounts.models import ApiToken
from accounts.services import api_token_create
from chat.models import Conversation, Message, Run
from chat.tests.api_helpers import Sse, parse_sse
from tests.clients import session_cookie
from tests.servers import running_daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Api:
    def __init__(self, server, token: str) -> None:
        self.port = server.port
        self.token = token

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(extra or {})}

    def json(self, method: str, path: str, payload=None) -> tuple[int, dict]:
        conn = self.connection()
        try:
            conn.request(method, path, json.dumps(payload) if payload is not None else None, self.headers())
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def stream(self, method: str, path: str, payload=None, headers: dict[str, str] | None = None):
        """An open SSE response and its connection (to read it line by line, or drop it)."""
        conn = self.connection()
        conn.request(method, path, json.dumps(payload) if payload is not None else None, self.headers(headers))
        return conn, conn.getresponse()


def read_sse(response, *, until: str | None = None) -> list[Sse]:
    """SSE messages as they arrive, up to an event of type `until` (or the end of the stream)."""
    messages, block = [], ""
    while True:
        line = response.readline().decode()
        if not line:
            return messages
        if line != "\n":
            block += line
            continue
        if block:
            message = parse_sse(block + "\n")[0]
            messages.append(message)
            block = ""
            if until and message.event == until:
                return messages


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_token_client_chats_over_http_sse_resumes_after_a_drop_and_uses_the_socket(user, tmp_path):
    created = api_token_create(owner=user, name="e2e")

    with running_daphne(tmp_path) as server:
        api = Api(server, created.secret)
        status, body = api.json("POST", "/api/conversations", {"agent": "assistant"})
        assert status == 201
        conversation_id = body["conversation"]["id"]
        base = f"/api/conversations/{conversation_id}"

        # 1. A streamed reply with live tool events, over plain HTTP.
        conn, response = api.stream("POST", f"{base}/messages", {"content": "What time is it?", "request_id": "e2e-1"})
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        first = read_sse(response)
        conn.close()

        # 2. Drop the connection mid-reply: the run goes on; resume with Last-Event-ID.
        conn, response = api.stream("POST", f"{base}/messages", {"content": "Tell me a long story please [[slow]]"})
        before = read_sse(response, until="message.delta")
        conn.close()
        run_id = before[0].data["run"]
        conn, resumed = api.stream("GET", f"{base}/events?run={run_id}", headers={"Last-Event-ID": before[-1].id})
        assert resumed.status == 200
        after = read_sse(resumed)
        conn.close()

        # 3. Drop again and never come back: the reply is still stored.
        conn, response = api.stream("POST", f"{base}/messages", {"content": "One more story please [[slow]]"})
        abandoned = read_sse(response, until="message.delta")
        conn.sock.close()
        conn.close()
        abandoned_run = abandoned[0].data["run"]
        wait_for(lambda: Run.objects.get(public_id=abandoned_run).status == Run.Status.COMPLETED)

        status, detail = api.json("GET", base)

        # 4. The same runs over the socket: bearer token, no Origin header.
        async def socket_chat():
            async with connect(server.ws, additional_headers={"Authorization": f"Bearer {created.secret}"}) as ws:
                await ws.send(json.dumps({"type": "conversation.open", "conversation": conversation_id}))
                state = json.loads(await asyncio.wait_for(ws.recv(), 10))
                await ws.send(json.dumps({"type": "message.send", "conversation": conversation_id, "content": "Thanks!"}))
                events = []
                try:
                    while not events or events[-1]["type"] != "run.finished":
                        events.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
                except TimeoutError:
                    raise AssertionError(f"no run.finished; socket got {events}\n{server.output()}") from None
                return state, events

        state, socket_events = asyncio.run(socket_chat())

    kinds = [m.event for m in first]
    assert kinds[:2] == ["message.created", "run.started"] and kinds[-1] == "run.finished"
    assert kinds.index("tool.called") < kinds.index("tool.output") < kinds.index("message.completed")
    assert [int(m.id) for m in first] == list(range(1, len(first) + 1))
    assert all(m.data["type"] == m.event and m.data["seq"] == int(m.id) for m in first)
    assert first[0].data["request_id"] == "e2e-1" and first[-1].data["status"] == "completed"

    seqs = [int(m.id) for m in before + after if m.id]
    assert seqs == list(range(1, len(seqs) + 1))
    story = "".join(m.data["delta"] for m in before + after if m.event == "message.delta")
    assert story.startswith("You said: “Tell me a long story please”.") and after[-1].event == "run.finished"
    assert story == next(m.data["content"] for m in after if m.event == "message.completed")

    assert status == 200
    replies = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert [m["status"] for m in replies] == ["completed"] * 3
    assert replies[2]["content"].startswith("You said: “One more story please”.")
    assert replies[2]["usage"]["total_tokens"] > 0 and replies[2]["usage"]["model"] == "scripted"

    assert state["type"] == "conversation.state" and state["run"] is None
    assert socket_events[-1]["status"] == "completed"
    conversation = Conversation.objects.get(public_id=conversation_id, owner=user)
    assert conversation.messages.filter(role="assistant", status="completed").count() == 4
    assert ApiToken.objects.get(pk=created.token.pk).last_used_at is not None


def test_refusals_over_real_http_and_socket(user, other_user, tmp_path):
    created = api_token_create(owner=user, name="e2e")
    theirs = Conversation.objects.create(owner=other_user, agent_key="assistant")
    cookie = session_cookie(user)

    async def sockets(server):
        async with connect(server.ws, additional_headers={"Authorization": "Bearer ac_0123456789_nope"}) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        # A session cookie without Origin: refused at the handshake (a browser always sends one).
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws, additional_headers={"Cookie": cookie}):
                pass
        return closed.value.rcvd.code, refused.value.response.status_code

    with running_daphne(tmp_path) as server:
        api = Api(server, created.secret)
        not_yours = api.json("GET", f"/api/conversations/{theirs.public_id}")
        no_token = Api(server, "")
        unauthorized = no_token.json("GET", "/api/agents")
        close_code, handshake_status = asyncio.run(sockets(server))

    assert not_yours == (404, {"error": {"code": "not_found", "message": "No such conversation."}})
    assert unauthorized[0] == 401 and unauthorized[1]["error"]["code"] == "unauthorized"
    assert close_code == 4401 and handshake_status == 403
    assert not Message.objects.exists()


def test_a_script_gets_a_plain_json_reply_and_deletes_the_conversation(user, tmp_path):
    api_secret = api_token_create(owner=user, name="script").secret
    with running_daphne(tmp_path) as server:
        api = Api(server, api_secret)
        status, created = api.json("POST", "/api/conversations", {"agent": "assistant"})
        conversation_id = created["conversation"]["id"]
        status, answer = api.json("POST", f"/api/conversations/{conversation_id}/messages?stream=0", {"content": "Hello there"})
        assert status == 200 and answer["run"]["status"] == "completed"
        assert "Hello there" in answer["message"]["content"] and answer["message"]["usage"]["total_tokens"] > 0

        status, _ = api.json("DELETE", f"/api/conversations/{conversation_id}")
        assert status == 204
        status, missing = api.json("GET", f"/api/conversations/{conversation_id}")
        assert (status, missing["error"]["code"]) == (404, "not_found")
    assert not Conversation.objects.filter(public_id=conversation_id).exists()
