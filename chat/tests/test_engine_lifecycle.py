"""The run's lifecycle promises at its edges: deleting a conversation while it answers or
waits for an approval, and what a stopped reply costs. Real database and channel layer; only
the model is scripted."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from agents import function_tool
from agents.testing import assistant_message, function_call
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents_app.models import AgentSession
from chat import engine
from chat.engine.process import engine as process
from chat.models import Conversation, Message, Run
from chat.tests.helpers import extra_tools
from chat.tests.scripts import streamed
from tests.waiting import eventually
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


@function_tool(needs_approval=True)
def close_account(reason: str) -> str:
    """Close the user's account.

    Args:
        reason: Why.
    """
    return "Closed."


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


async def _reply_text(run_pk: int) -> str | None:
    reply = await Message.objects.filter(run_id=run_pk, role="assistant").afirst()
    return reply.content if reply and reply.content else None


async def test_deleting_a_conversation_while_it_answers_stops_the_run_and_settles_its_usage(user, conversation, script, settings):
    settings.RUN_HEARTBEAT_SECONDS = 0.05
    gate = asyncio.Event()  # never set: the model would go on forever
    with script([streamed("Once upon ", "a time…", gate=gate)]) as model:
        started = await engine.start(user=user, conversation=conversation, content="Tell me a long story")
        await eventually(lambda: _reply_text(started.run.pk), what="the reply to start streaming")
        session_id = conversation.session_id
        await engine.delete(conversation=conversation)

    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert not await AgentSession.objects.filter(session_id=session_id).aexists()  # and not written again
    assert process.executor(str(started.run.public_id)) is None  # nothing of the run is left to write
    record = await UsageRecord.objects.aget(user=user)
    assert record.reserved_tokens == 0  # the day's budget gets its reservation back
    assert len(model.calls) == 1


async def test_deleting_a_conversation_waiting_for_an_approval_ends_the_run_first(user, conversation, script):
    with extra_tools("assistant", close_account), script(
        [[assistant_message("Closing it."), function_call("close_account", {"reason": "moving"}, call_id="call_close")]]
    ):
        started = await engine.start(user=user, conversation=conversation, content="Close my account")
        await engine.wait_for_run(started.run.public_id)
        assert (await Run.objects.aget(pk=started.run.pk)).status == Run.Status.AWAITING_APPROVAL
        await engine.delete(conversation=conversation)

    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    record = await UsageRecord.objects.aget(user=user)
    assert record.reserved_tokens == 0 and record.total_tokens > 0  # what the paused run used stays billed
    # Deciding afterwards finds nothing: the approval went with the conversation.
    assert not await sync_to_async(lambda: Run.objects.filter(pk=started.run.pk).exists())()


async def test_a_stopped_reply_records_the_tokens_its_cut_short_call_consumed(user, conversation, script):
    """On a paid API the stopped call's whole input was billed, and its output so far: the
    ledger records them (counted locally, marked estimated) instead of 0 tokens."""
    gate = asyncio.Event()
    with script([streamed("The first ", "half, and the rest", gate=gate)]):
        started = await engine.start(user=user, conversation=conversation, content="Tell me about the weather " * 20)
        await eventually(lambda: _reply_text(started.run.pk), what="the reply to start streaming")
        await engine.stop(conversation=conversation)
        await engine.wait_for_run(started.run.public_id)

    record = await UsageRecord.objects.aget(run_id=started.run.pk)
    reply = await Message.objects.aget(run_id=started.run.pk, role="assistant")
    assert reply.status == Message.Status.CANCELLED
    assert record.estimated and record.requests == 1 and record.reserved_tokens == 0
    assert record.input_tokens > 100  # the instructions and the long question were sent
    assert record.output_tokens > 0 and record.total_tokens == record.input_tokens + record.output_tokens
    assert reply.total_tokens == record.total_tokens  # the reply shows what the stop cost


async def test_a_completed_reply_keeps_the_providers_counts(user, conversation, script):
    with script([streamed("All ", "done.")]):
        started = await engine.start(user=user, conversation=conversation, content="Hi")
        await engine.wait_for_run(started.run.public_id)
    record = await UsageRecord.objects.aget(run_id=started.run.pk)
    assert not record.estimated and (record.input_tokens, record.output_tokens) == (42, 7)


@function_tool
def look_up(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: What to look up.
    """
    return f"Notes on {topic}."


async def test_one_message_cannot_spend_far_past_the_budget(user, conversation, script, settings):
    """A long question and a model that keeps calling tools: each call would send it all again.
    The first call is what admission reserved for; the next one would pass what is left of the
    budget, so the run ends there with a clear reply and a valid history."""
    from agents_app import history
    from chat.tests.helpers import stored_history

    settings.AGENTS_DAILY_TOKEN_BUDGET = 1_000
    settings.AGENTS_RUN_TOKEN_RESERVATION = 500
    long_question = "Please summarise these notes about the harbour and its ships. " * 60  # under 4,000 characters
    loop = [[function_call("look_up", {"topic": f"ship {n}"}, call_id=f"call_{n}")] for n in range(10)]
    with extra_tools("assistant", look_up), script(loop) as model:
        started = await engine.start(user=user, conversation=conversation, content=long_question)
        await engine.wait_for_run(started.run.public_id)

    run = await Run.objects.aget(pk=started.run.pk)
    reply = await Message.objects.aget(run=run, role="assistant")
    assert len(model.calls) == 1  # without the meter: ten calls, each sending the whole question
    assert run.status == Run.Status.FAILED and "daily budget" in reply.error
    assert history.problems(await stored_history(conversation)) == []


@pytest.mark.parametrize("dead", ["process died", "approval expired"])
async def test_a_message_to_a_conversation_held_by_a_dead_run_starts_at_once(user, conversation, script, dead):
    """Dead runs are looked for only when the conversation is found busy: the message that
    finds one releases it and starts, with no `busy` on the way."""
    long_ago = timezone.now() - timedelta(hours=1)
    if dead == "process died":
        held = await Run.objects.acreate(conversation=conversation, status=Run.Status.RUNNING, heartbeat_at=long_ago)
    else:
        held = await Run.objects.acreate(
            conversation=conversation, status=Run.Status.AWAITING_APPROVAL, heartbeat_at=timezone.now(),
            approval_expires_at=long_ago,
        )
    await Message.objects.acreate(conversation=conversation, run=held, role="assistant", status="streaming")
    with script([streamed("Here now.")]):
        started = await engine.start(user=user, conversation=conversation, content="Anyone there?")
        await engine.wait_for_run(str(started.run.public_id))

    await held.arefresh_from_db()
    assert held.status == (Run.Status.INTERRUPTED if dead == "process died" else Run.Status.CANCELLED)
    reply = await Message.objects.aget(run=started.run, role="assistant")
    assert reply.status == Message.Status.COMPLETED and reply.content == "Here now."
