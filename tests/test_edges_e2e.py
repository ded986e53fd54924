"""Promises across two real daphne processes sharing the database (and Redis on that pass):
the daily budget holds when parallel messages land on both, and revoking a token on one
process closes its sockets on the other."""

from __future__ import annotations

import asyncio
import http.client
import json
from http.cookies import SimpleCookie

import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from accounts.services import api_token_create
from chat.models import Conversation, Run
from tests.clients import session_cookie
from tests.servers import start_daphne
from tests.waiting import eventually
from usage.models import TokenBudget, UsageRecord

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EDGE_ENV = {
    "AGENTS_RUN_TOKEN_RESERVATION": "100",
    "AGENTS_MAX_ACTIVE_RUNS_PER_USER": "0",
    "RATE_LIMIT_SOCKETS_PER_USER": "0",
    "RATE_LIMIT_SOCKET_FRAMES": "",  # thirty sockets of one user send at once
    "AGENTS_SCRIPTED_DELAY": "0.02",
    # Without a shared channel layer (the SQLite pass) the recheck is what reaches the other
    # process; with Redis the revocation message does it at once.
    "AUTH_RECHECK_SECONDS": "1",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, django_db_setup):
    tmp = tmp_path_factory.mktemp("edges")
    started = [start_daphne(tmp, name=name, extra_env=EDGE_ENV) for name in ("a", "b")]
    yield started
    for server in started:
        server.stop()


def token_socket(server, secret: str):
    return connect(server.ws, additional_headers={"Authorization": f"Bearer {secret}"})


async def first_answer(ws) -> dict:
    while (event := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] not in ("run.started", "error"):
        pass
    return event


async def test_parallel_messages_on_two_processes_cannot_spend_past_the_budget(servers, user):
    await TokenBudget.objects.acreate(user=user, daily_token_budget=300)
    secret = (await sync_to_async(api_token_create)(owner=user, name="load")).secret
    conversations = [
        await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
        for _ in range(30)
    ]
    sockets = [await token_socket(servers[i % 2], secret) for i in range(30)]
    try:
        await asyncio.gather(*(
            ws.send(json.dumps({"type": "message.send", "conversation": str(c.public_id), "content": "Hello there"}))
            for ws, c in zip(sockets, conversations, strict=True)
        ))
        answers = await asyncio.gather(*(first_answer(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()

    started = [a for a in answers if a["type"] == "run.started"]
    refused = [a for a in answers if a["type"] == "error"]
    assert 1 <= len(started) <= 3 and {a["code"] for a in refused} == {"quota_exceeded"}
    # The ledger is complete only once the admitted runs have finished on their servers.
    async def all_finished() -> bool:
        return not await Run.objects.active().filter(conversation__owner=user).aexists()

    await eventually(all_finished, timeout=30, what="the admitted runs to finish")
    used = sum([r.total_tokens async for r in UsageRecord.objects.filter(user=user)])
    assert used <= 300 + 100  # the budget plus one reservation, at most


def revoke_on_the_page(server, cookie: str, token_pk: int) -> int:
    """What the user does on the API tokens page: load it (for the CSRF cookie), press Revoke."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request("GET", "/api-tokens/", headers={"Cookie": cookie})
        page = conn.getresponse()
        page.read()
        jar = SimpleCookie()
        for header in page.headers.get_all("Set-Cookie") or []:
            jar.load(header)
        csrf = jar["csrftoken"].value
        conn.request(
            "POST", f"/api-tokens/{token_pk}/revoke/",
            headers={"Cookie": f"{cookie}; csrftoken={csrf}", "X-CSRFToken": csrf, "Origin": server.http},
        )
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


async def test_revoking_a_token_on_one_process_closes_its_socket_on_the_other(servers, user):
    created = await sync_to_async(api_token_create)(owner=user, name="cli")
    cookie = await sync_to_async(session_cookie)(user)
    async with token_socket(servers[1], created.secret) as ws:
        await ws.send(json.dumps({"type": "ping", "request_id": "p"}))
        assert json.loads(await ws.recv())["type"] == "pong"

        # The user revokes it on the API tokens page, served by the other process.
        assert await asyncio.to_thread(revoke_on_the_page, servers[0], cookie, created.token.pk) == 302

        with pytest.raises(ConnectionClosed) as closed:
            await _receive_until_closed(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def _receive_until_closed(ws) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 10)


# --- per-user limits that must hold across processes (Redis only: without it each process counts its own)
@pytest.fixture(scope="module")
def limited_servers(tmp_path_factory, django_db_setup):
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("limits are shared across processes only through Redis (REDIS_URL)")
    tmp = tmp_path_factory.mktemp("limited")
    env = {
        "RATE_LIMIT_SOCKET_FRAMES": "6/minute", "RATE_LIMIT_SOCKET_REFUSALS": "50 per 10 second",
        "RATE_LIMIT_STREAMS_PER_USER": "1", "RUN_KEEPALIVE_SECONDS": "0.2",
    }
    started = [start_daphne(tmp, name=name, extra_env=env) for name in ("a", "b")]
    yield started
    for server in started:
        server.stop()


async def test_frames_from_one_users_sockets_on_two_processes_are_limited_together(limited_servers, user):
    secret = (await sync_to_async(api_token_create)(owner=user, name="frames")).secret
    async with token_socket(limited_servers[0], secret) as a, token_socket(limited_servers[1], secret) as b:
        for n in range(5):
            await a.send(json.dumps({"type": "ping", "request_id": f"a{n}"}))
            await b.send(json.dumps({"type": "ping", "request_id": f"b{n}"}))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in (a, b) for _ in range(5)]

    assert sorted(a["type"] for a in answers) == ["error"] * 4 + ["pong"] * 6
    assert {a["code"] for a in answers if a["type"] == "error"} == {"rate_limited"}


def open_stream(server, secret: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("GET", path, headers={"Authorization": f"Bearer {secret}"})
    return conn, conn.getresponse()


async def test_a_users_event_streams_are_capped_across_two_processes(limited_servers, user):
    from datetime import timedelta

    from django.utils import timezone

    from chat.tests.factories import ConversationFactory, RunFactory

    secret = (await sync_to_async(api_token_create)(owner=user, name="streams")).secret
    run = await sync_to_async(RunFactory)(
        conversation=await sync_to_async(ConversationFactory)(owner=user), status=Run.Status.RUNNING,
        finished_at=None, heartbeat_at=timezone.now(),
    )
    path = f"/api/conversations/{run.conversation.public_id}/events?run={run.public_id}"
    first_conn, first = await asyncio.to_thread(open_stream, limited_servers[0], secret, path)
    refused_conn, refused = await asyncio.to_thread(open_stream, limited_servers[1], secret, path)
    refusal = json.loads(await asyncio.to_thread(refused.read))
    refused_conn.close()
    first_conn.close()  # the client goes away: its process gives the slot back

    async def reopened():
        conn, response = await asyncio.to_thread(open_stream, limited_servers[1], secret, path)
        if response.status == 200:
            return conn, response
        await asyncio.to_thread(response.read)
        conn.close()
        return None

    again = None
    for _ in range(50):
        if again := await reopened():
            break
        await asyncio.sleep(0.1)
    assert first.status == 200 and refused.status == 429 and refusal["error"]["code"] == "too_many_streams"
    assert again is not None
    conn, response = again
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert b"run.finished" in await asyncio.to_thread(response.read)  # its process died: the stream ends
    conn.close()
