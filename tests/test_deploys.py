"""Deploys lose nothing: a daphne that gets SIGTERM (a rolling deploy, a scale-down) refuses
new runs with `shutting_down`, lets runs in flight finish for up to RUN_DRAIN_SECONDS, and only
then ends the rest as interrupted, at once, with the turn closed; the next message works on
another process."""

from __future__ import annotations

import asyncio

import pytest

from agents_app import history
from chat.engine.runs import SHUTDOWN_ERROR
from chat.models import Conversation, Message, Run
from tests.clients import ChatClient, session_cookie
from tests.servers import start_daphne
from tests.test_faults import FAULT_ENV, history_of
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cookie(user):
    user.is_staff = True  # the diagnostics agent is for staff
    user.save()
    return session_cookie(user)


async def finished(run_id: str) -> Run | None:
    run = await Run.objects.aget(public_id=run_id)
    return None if run.is_active else run


async def test_a_stopping_process_finishes_its_runs_and_refuses_new_ones(tmp_path, cookie):
    leaving = start_daphne(tmp_path, name="leaving", extra_env={**FAULT_ENV, "RUN_DRAIN_SECONDS": "30"})
    staying = start_daphne(tmp_path, name="staying", extra_env=FAULT_ENV)
    try:
        async with ChatClient(leaving, cookie) as client:
            conversation = await client.create()
            await client.say(conversation, "[[slow]] one two three four five six seven eight nine ten eleven twelve")
            run_id = (await client.until("message.delta"))[-1]["run"]
            leaving.process.terminate()  # SIGTERM, as an orchestrator sends it
            async with ChatClient(leaving, cookie) as late:  # it still listens while it drains
                other = await late.create()
                await late.say(other, "Hello?", request_id="late")
                refused = (await late.until("error"))[-1]
        assert refused["code"] == "shutting_down" and refused["request_id"] == "late"
        run = await eventually(lambda: finished(run_id), timeout=30, what="the run to finish while draining")
        reply = await Message.objects.aget(run=run, role="assistant")
        assert run.status == "completed" and "twelve" in reply.content
        assert not await Message.objects.filter(conversation__public_id=other).aexists()
        await asyncio.to_thread(leaving.process.wait, 30)  # it exits once the drain is over

        async with ChatClient(staying, cookie) as client:
            await client.say(conversation, "And now?", request_id="next")
            assert (await client.until("run.finished"))[-1]["status"] == "completed"
    finally:
        leaving.stop()
        staying.stop()


async def test_runs_still_going_when_the_drain_times_out_end_as_interrupted_at_once(tmp_path, cookie):
    leaving = start_daphne(tmp_path, name="leaving", extra_env={**FAULT_ENV, "RUN_DRAIN_SECONDS": "0.5"})
    staying = start_daphne(tmp_path, name="staying", extra_env=FAULT_ENV)
    try:
        async with ChatClient(leaving, cookie) as client:
            conversation = await client.create()
            await client.say(conversation, "[[stall]] this reply will never finish")
            run_id = (await client.until("message.delta", count=2))[-1]["run"]
            leaving.process.terminate()
        # Well before the 2-second stale mark of FAULT_ENV's heartbeat settings.
        run = await eventually(lambda: finished(run_id), timeout=15, what="the run to be ended by the drain")
        await asyncio.to_thread(leaving.process.wait, 30)
        reply = await Message.objects.aget(run=run, role="assistant")
        assert run.status == "interrupted" and run.error == SHUTDOWN_ERROR
        assert reply.status == "failed" and reply.content.startswith("You said:")
        assert history.problems(await history_of(conversation)) == []
        assert not await Run.objects.active().filter(conversation__public_id=conversation).aexists()

        async with ChatClient(staying, cookie) as client:
            await client.say(conversation, "Are you still there?", request_id="next")
            assert (await client.until("run.finished"))[-1]["status"] == "completed"
        assert (await Conversation.objects.aget(public_id=conversation)).current_agent_name
    finally:
        leaving.stop()
        staying.stop()
