"""The daily token budget: refused before anything is stored or any model is called."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse
from django.utils import timezone

from chat.engine import runs, transitions
from chat.models import Conversation, Message, Run
from chat.tests.factories import ConversationFactory, RunFactory, finished_reply
from chat.tests.helpers import connect, receive_until, send_message
from chat.tests.scripts import USAGE, streamed
from usage import quotas
from usage.models import TokenBudget, UsageRecord


def spent_today(user, tokens: int) -> Message:
    return finished_reply(owner=user, total_tokens=tokens)


@pytest.mark.django_db(transaction=True)
async def test_user_over_budget_gets_quota_exceeded_and_nothing_is_stored_or_called(user, script, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    await sync_to_async(spent_today)(user, 100)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    messages_before = await Message.objects.acount()

    with script([]) as model:  # no steps: any model call would fail the run
        ws = await connect(user)
        await send_message(ws, conversation, "One more, please", request_id="r-over")
        (error,) = await receive_until(ws, "error")
        await ws.disconnect()

    assert error["code"] == "quota_exceeded" and error["request_id"] == "r-over"
    assert error["conversation"] == str(conversation.public_id)
    assert "100 tokens for today" in error["message"] and "resets at 00:00" in error["message"]
    assert len(model.calls) == 0
    assert await Message.objects.acount() == messages_before
    assert not await Run.objects.filter(conversation=conversation).aexists()


@pytest.mark.django_db(transaction=True)
async def test_user_under_budget_chats_and_the_reply_counts_once_it_finishes(user, script, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    await sync_to_async(spent_today)(user, 60)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")

    with script([streamed("Fine.")]) as model:
        started = await runs.start_run(user=user, conversation=conversation, content="Hi")
        in_flight = await sync_to_async(quotas.quota_status)(user=user)
        await runs.wait_for_run(started.run.public_id)
    after = await sync_to_async(quotas.quota_status)(user=user)

    assert len(model.calls) == 1
    assert in_flight.used == 60  # the reply has no usage until its run finishes
    assert after.used == 60 + USAGE.total_tokens and after.exceeded and after.remaining == 0
    with pytest.raises(quotas.QuotaExceeded):
        await runs.start_run(user=user, conversation=conversation, content="Again")


@pytest.mark.django_db
def test_profile_budget_overrides_the_site_default(user, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    spent_today(user, 150)
    assert quotas.quota_status(user=user).exceeded

    TokenBudget.objects.create(user=user, daily_token_budget=1000)
    assert quotas.quota_status(user=user).remaining == 850

    TokenBudget.objects.filter(user=user).update(daily_token_budget=0)  # 0: unlimited
    assert quotas.check_quota(user=user).unlimited


@pytest.mark.django_db
def test_site_budget_zero_means_unlimited(user, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 0
    spent_today(user, 10_000_000)
    status = quotas.check_quota(user=user)
    assert status.unlimited and status.remaining is None


@pytest.mark.django_db
def test_only_todays_usage_of_this_user_counts(user, other_user, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    start_of_today, resets_at = quotas.day_window()
    finished_reply(owner=user, total_tokens=500, age=timezone.now() - start_of_today + timedelta(seconds=1))
    spent_today(other_user, 500)
    spent_today(user, 30)

    status = quotas.quota_status(user=user)
    assert status.used == 30 and status.remaining == 70
    assert resets_at - start_of_today == timedelta(days=1) and resets_at > timezone.now()


@pytest.mark.django_db
def test_a_finished_run_counts_through_its_stored_reply(user, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    run = RunFactory(conversation=ConversationFactory(owner=user), status=Run.Status.RUNNING, finished_at=None)
    Message.objects.create(conversation=run.conversation, run=run, role="assistant", status="streaming")
    assert quotas.quota_status(user=user).used == 0

    transitions.run_finish(
        run=run,
        outcome=transitions.RunOutcome(
            status=Run.Status.COMPLETED, content="ok", agent_name="Assistant", model="gpt-4.1-mini",
            usage={"requests": 1, "input_tokens": 90, "output_tokens": 20, "total_tokens": 110},
        ),
    )
    assert quotas.quota_status(user=user).exceeded
    assert UsageRecord.objects.get(run=run).total_tokens == 110


@pytest.mark.django_db
def test_chat_page_shows_the_remaining_budget_and_explains_a_refusal(client, user, settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"
    settings.AGENTS_DAILY_TOKEN_BUDGET = 1000
    client.force_login(user)
    reply = spent_today(user, 400)
    url = reverse("chat:conversation_detail", args=[reply.conversation.public_id])

    page = client.get(url).content.decode()
    assert 'data-remaining="600"' in page and "600 tokens left today" in page
    assert 'data-role="quota"' not in page

    spent_today(user, 600)
    page = client.get(url).content.decode()
    assert "0 tokens left today" in page
    assert "You have used your 1,000 tokens for today. Your budget resets at 00:00" in page


# --- Parallel messages (issue: the budget was bypassed by 30 conversations at once) -----------
async def _send_everywhere(user, conversations, *, content="Hello"):
    """One `message.send` per conversation, all at once, each on its own socket; the first
    answer of each (`run.started` or `error`)."""
    sockets = [await connect(user) for _ in conversations]
    for ws, conversation in zip(sockets, conversations, strict=True):
        await send_message(ws, conversation, content, request_id=str(conversation.pk))
    answers = []
    for ws in sockets:
        while (event := await ws.receive_json_from(timeout=10))["type"] not in ("run.started", "error"):
            pass
        answers.append(event)
    return sockets, answers


@pytest.mark.django_db(transaction=True)
async def test_parallel_messages_cannot_spend_past_the_budget(user, script, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 300
    settings.AGENTS_RUN_TOKEN_RESERVATION = 100
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 0  # no cap: the budget alone must hold
    settings.RATE_LIMIT_SOCKETS_PER_USER = 0  # thirty tabs
    settings.RATE_LIMIT_SOCKET_FRAMES = ""  # sending at once: the frames of all of them count together
    conversations = [
        await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
        for _ in range(30)
    ]
    gate = asyncio.Event()
    with script([streamed("Fine ", "thanks.", gate=gate) for _ in range(30)]) as model:
        sockets, answers = await _send_everywhere(user, conversations)
        gate.set()
        started = [a for a in answers if a["type"] == "run.started"]
        for ws in sockets:
            await ws.disconnect()
        for answer in started:
            await runs.wait_for_run(answer["run"])

    refused = [a for a in answers if a["type"] == "error"]
    # Every admitted run held 100 tokens of a 300-token budget: three at the most.
    assert 1 <= len(started) <= 3 and len(model.calls) == len(started)
    assert {a["code"] for a in refused} == {"quota_exceeded"} and len(refused) == 30 - len(started)
    used = await sync_to_async(quotas.tokens_used_today)(user=user)
    assert used <= settings.AGENTS_DAILY_TOKEN_BUDGET + settings.AGENTS_RUN_TOKEN_RESERVATION
    # Refused messages left nothing behind.
    assert await Run.objects.filter(conversation__owner=user).acount() == len(started)


@pytest.mark.django_db(transaction=True)
async def test_runs_in_flight_hold_a_reservation_until_they_settle(user, script, settings):
    settings.AGENTS_DAILY_TOKEN_BUDGET = 10_000
    settings.AGENTS_RUN_TOKEN_RESERVATION = 2_500
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    gate = asyncio.Event()
    with script([streamed("Fine ", "thanks.", gate=gate)]):
        started = await runs.start_run(user=user, conversation=conversation, content="Hi")
        during = await sync_to_async(quotas.quota_status)(user=user)
        gate.set()
        await runs.wait_for_run(started.run.public_id)
    after = await sync_to_async(quotas.quota_status)(user=user)

    assert (during.used, during.reserved, during.remaining) == (0, 2_500, 7_500)
    assert (after.used, after.reserved) == (USAGE.total_tokens, 0)


@pytest.mark.django_db(transaction=True)
async def test_a_user_may_have_only_so_many_replies_generating_at_once(user, script, settings):
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 3
    conversations = [
        await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
        for _ in range(6)
    ]
    gate = asyncio.Event()
    with script([streamed("Fine ", "thanks.", gate=gate) for _ in range(7)]):
        sockets, answers = await _send_everywhere(user, conversations)
        started = [a for a in answers if a["type"] == "run.started"]
        refused = [a for a in answers if a["type"] == "error"]
        assert len(started) == 3 and {a["code"] for a in refused} == {"too_many_runs"}
        assert "at most 3 at a time" in refused[0]["message"]
        gate.set()
        for answer in started:
            await runs.wait_for_run(answer["run"])
        # Once they finished, the next message runs.
        again = await runs.start_run(user=user, conversation=conversations[-1], content="Now?")
        await runs.wait_for_run(again.run.public_id)
        for ws in sockets:
            await ws.disconnect()
    assert (await Run.objects.aget(pk=again.run.pk)).status == Run.Status.COMPLETED
