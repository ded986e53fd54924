"""When Redis or Postgres is slow, or the database pool is exhausted, nothing is lost and
nothing answers a 500: replies arrive whole (later), and what cannot be served is refused with
`overloaded` (503 and `Retry-After`) before anything is stored. Real daphne processes; the slow
services are real ones behind a delaying proxy (tests/latency.py)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from accounts.services import api_token_create
from chat.models import Conversation, Message
from tests.latency import latency_proxy
from tests.servers import database_url, running_daphne
from tests.test_e2e_api import Api, read_sse

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

postgres_and_redis = pytest.mark.skipif(
    not settings.REDIS_URL or connection.vendor != "postgresql",
    reason="Postgres pools and Redis latency exist on the Postgres + Redis pass",
)
CLIENTS = 6
# One user's replies at once, past the per-user cap: the load is the point here.
NO_CAP = {"AGENTS_MAX_ACTIVE_RUNS_PER_USER": "0"}
PHRASE = "the quick brown fox jumps over the lazy dog again and again"


def conversations_for(user, n: int) -> list[str]:
    return [str(Conversation.objects.create(owner=user, agent_key="assistant", current_agent_name="Assistant").public_id) for _ in range(n)]


def ask(api: Api, conversation: str, content: str) -> tuple[int, list]:
    conn, response = api.stream("POST", f"/api/conversations/{conversation}/messages", {"content": content})
    try:
        if response.status != 200:
            return response.status, [json.loads(response.read() or b"null"), response.getheader("Retry-After")]
        return 200, read_sse(response)
    finally:
        conn.close()


def assert_whole(events) -> None:
    """Every event in order, and the streamed text equals the stored reply."""
    data = [e.data for e in events if e.data]
    seqs = [d["seq"] for d in data if isinstance(d.get("seq"), int)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert data[-1]["type"] == "run.finished" and data[-1]["status"] == "completed", data[-1]
    completed = next(d for d in data if d["type"] == "message.completed")
    assert "".join(d["delta"] for d in data if d["type"] == "message.delta") == completed["content"]
    assert PHRASE.split()[-1] in completed["content"]


def chat_through(server, token: str, conversations: list[str]) -> list[tuple[int, list]]:
    api = Api(server, token)
    with ThreadPoolExecutor(len(conversations)) as pool:
        return list(pool.map(lambda c: ask(api, c, PHRASE), conversations))


def _redirected(url: str, port: int) -> str:
    parsed = urlparse(url)
    return parsed._replace(netloc=f"{parsed.hostname}:{port}" if not parsed.username else f"{parsed.username}@127.0.0.1:{port}").geturl()


@postgres_and_redis
def test_a_slow_redis_delays_replies_but_loses_nothing(user, tmp_path):
    token = api_token_create(owner=user, name="slow").secret
    conversations = conversations_for(user, CLIENTS)
    redis = urlparse(settings.REDIS_URL)
    with latency_proxy(redis.hostname, redis.port or 6379, delay=0.02) as proxy:
        env = {**NO_CAP, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}{redis.path}"}
        with running_daphne(tmp_path, extra_env=env) as server:
            answers = chat_through(server, token, conversations)
    for status, events in answers:
        assert status == 200
        assert_whole(events)


@postgres_and_redis
def test_a_slow_postgres_delays_replies_but_loses_nothing(user, tmp_path):
    token = api_token_create(owner=user, name="slow").secret
    conversations = conversations_for(user, CLIENTS)
    db = urlparse(database_url())
    with latency_proxy(db.hostname, db.port or 5432, delay=0.01) as proxy:
        env = {**NO_CAP, "DATABASE_URL": _redirected(database_url(), proxy.port)}
        with running_daphne(tmp_path, extra_env=env) as server:
            answers = chat_through(server, token, conversations)
    for status, events in answers:
        assert status == 200
        assert_whole(events)


@postgres_and_redis
def test_an_exhausted_database_pool_refuses_with_overloaded_and_stores_nothing(user, tmp_path):
    token = api_token_create(owner=user, name="busy").secret
    conversations = conversations_for(user, 24)
    db = urlparse(database_url())
    tight = {**NO_CAP, "DB_POOL_SIZE": "1", "DB_POOL_TIMEOUT": "0.05", "AGENTS_SCRIPTED_DELAY": "0.01"}
    # A slow database makes every step hold the one connection longer: requests pile up.
    with latency_proxy(db.hostname, db.port or 5432, delay=0.01) as proxy:
        env = {**tight, "DATABASE_URL": _redirected(database_url(), proxy.port)}
        with running_daphne(tmp_path, extra_env=env) as server:
            answers = chat_through(server, token, conversations)
            log = server.output()

    refused = [body for status, body in answers if status != 200]
    assert refused, "the pool never ran out: the test did not exercise the limit"
    for status, body in answers:
        assert status in (200, 503), (status, body)
        if status == 503:
            error, retry_after = body
            assert error["error"]["code"] == "overloaded" and int(retry_after) >= 1
        else:
            assert_whole(body)
    assert "Internal Server Error" not in log
    # What was refused left nothing behind; what was answered is stored whole.
    answered = sum(status == 200 for status, _ in answers)
    assert Message.objects.filter(conversation__owner=user, role="user").count() == answered


def test_latency_proxy_forwards_and_delays():
    async def main() -> float:
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with latency_proxy("127.0.0.1", port, delay=0.2) as proxy:
            started = asyncio.get_running_loop().time()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            await writer.drain()
            assert await reader.read(100) == b"ping"
            elapsed = asyncio.get_running_loop().time() - started
            writer.close()
        server.close()
        return elapsed

    assert asyncio.run(main()) >= 0.4  # both directions were delayed


