"""What one message costs the database, on every backend: a bound on the SQL statements of a
run sent over the API, the same for a reply of 3 deltas and of 300. A change that adds a query
per token, or a few per run, fails here rather than only in the benchmark (`bench/run_cost.py`
lists the statements of one run)."""

from __future__ import annotations

import pytest
from django.db.backends.utils import CursorWrapper

from chat.engine import runs
from chat.models import Conversation, Run
from chat.tests.api_helpers import SseReader, api_client, token_for
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)

# Measured 2026-12-07 (traces off): 36 on SQLite, 32 on PostgreSQL; 45 / 41 before the run's
# redundant reads and writes were dropped.
STATEMENTS_PER_MESSAGE = 38


@pytest.fixture
def statements(monkeypatch, settings):
    """Every SQL statement any thread executes (the run's work is spread over executor threads)."""
    settings.AGENTS_TRACE_LOCAL = False  # the trace writer's batches are shared by many runs
    settings.AGENTS_MODEL_PROVIDER = "scripted"
    executed: list[str] = []
    execute = CursorWrapper.execute

    def counting(self, sql, params=None):
        executed.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    return executed


async def message_statements(user, statements) -> list[str]:
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    api = api_client(await token_for(user))
    await api.get("/api/agents")  # the token's first use is recorded once; not part of a message
    statements.clear()
    response = await api.post(
        f"/api/conversations/{conversation.public_id}/messages",
        data={"content": "Hello"},
        content_type="application/json",
    )
    messages = await SseReader(response.streaming_content).rest()
    assert messages[-1].event == "run.finished" and messages[-1].data["status"] == "completed"
    run = await Run.objects.aget(conversation=conversation)
    await runs.wait_for_run(str(run.public_id))
    return list(statements)


async def test_a_message_costs_a_bounded_number_of_statements_whatever_the_reply_length(user, statements, script):
    with script([streamed(*["word "] * 3), streamed(*["word "] * 300)]):
        short = await message_statements(user, statements)
        long = await message_statements(user, statements)

    assert len(short) <= STATEMENTS_PER_MESSAGE, "\n".join(short)
    # A heartbeat may fall inside a run: at most one beat's statements more.
    assert len(long) <= len(short) + 2, "\n".join(long)
