"""Human in the loop: a tool that needs approval parks the run in the database; a decision
from any socket resumes it, and the SDK history stays valid whatever happens."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from agents import function_tool
from agents.testing import assistant_message, function_call
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents_app import history
from chat.engine import runs, transitions
from chat.models import Approval, Conversation, Message, Run
from chat.tests.helpers import connect, extra_tools, of_type, receive_until, send_message, stored_history
from chat.tests.scripts import streamed
from config.errors import AppError
from tests.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)

refunds: list[str] = []


@function_tool(needs_approval=True)
def refund_order(order_number: str, amount: float) -> str:
    """Refund an order.

    Args:
        order_number: The order to refund.
        amount: How much to refund, in USD.
    """
    refunds.append(order_number)
    return f"Refunded {amount:.2f} USD on {order_number}."


@pytest.fixture(autouse=True)
def _refund_tool():
    refunds.clear()
    with extra_tools("assistant", refund_order):
        yield


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


def refund_steps(final_text="Done: refunded."):
    return [
        [assistant_message("I will refund that."), function_call("refund_order", {"order_number": "A-1", "amount": 12.5}, call_id="call_refund")],
        streamed(final_text),
    ]


async def pause(ws, conversation) -> list[dict]:
    await send_message(ws, conversation, "Please refund order A-1")
    return await receive_until(ws, "run.paused")


async def test_tool_needing_approval_pauses_the_run_and_keeps_the_conversation_locked(user, conversation, script):
    with script(refund_steps()):
        ws = await connect(user)
        events = await pause(ws, conversation)
        requested = of_type(events, "approval.requested")[0]
        await send_message(ws, conversation, "Another message", request_id="r2")
        refused = await receive_until(ws, "error")
        await ws.disconnect()

    assert requested == {**requested, "call_id": "call_refund", "name": "refund_order", "arguments": {"order_number": "A-1", "amount": 12.5}, "agent": "Assistant"}
    assert refused[-1]["code"] == "approval_pending"
    run = await Run.objects.aget(public_id=requested["run"])
    assert run.status == Run.Status.AWAITING_APPROVAL and run.state and run.approval_expires_at > timezone.now()
    reply = await Message.objects.aget(run=run, role="assistant")
    assert reply.status == Message.Status.AWAITING_APPROVAL and reply.content == "I will refund that."
    assert refunds == []
    assert "state" not in str(events)  # the serialised run state never reaches a client


async def test_approving_from_another_tab_after_reload_resumes_and_runs_the_tool_once(user, conversation, script):
    with script(refund_steps()):
        first = await connect(user)
        paused = await pause(first, conversation)
        await first.disconnect()

        # A reload: a new socket learns of the pending approval from conversation.state.
        second = await connect(user)
        await second.send_json_to({"type": "conversation.open", "conversation": str(conversation.public_id)})
        state = await second.receive_json_from()
        assert [a["call_id"] for a in state["run"]["approvals"]] == ["call_refund"]
        await receive_until(second, "run.paused")  # the replay of what it missed
        await second.send_json_to(
            {"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": True}
        )
        resumed = await receive_until(second, "run.finished")
        await second.send_json_to(
            {"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": True, "request_id": "again"}
        )
        again = await receive_until(second, "error")
        await second.disconnect()

    assert refunds == ["A-1"]
    assert again[-1]["code"] == "not_found" or again[-1]["code"] == "already_decided"
    kinds = [e["type"] for e in resumed]
    assert kinds.index("approval.decided") < kinds.index("tool.output") < kinds.index("message.completed")
    seqs = [e["seq"] for e in paused + resumed if "seq" in e]
    assert seqs == sorted(set(seqs))  # one numbering across pause and resume
    completed = of_type(resumed, "message.completed")[0]
    assert completed["status"] == "completed" and completed["content"] == "I will refund that.\n\nDone: refunded."
    assert completed["activity"][0]["status"] == "completed"
    assert resumed[-1]["status"] == "completed"
    items = await stored_history(conversation)
    assert history.problems(items) == []
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == ["call_refund"]
    approval = await Approval.objects.aget(call_id="call_refund")
    assert approval.status == Approval.Status.APPROVED and approval.decided_by_id == user.pk
    run = await Run.objects.aget(public_id=completed["run"])
    assert run.status == Run.Status.COMPLETED and run.state == ""


async def test_rejecting_with_a_reason_skips_the_tool_and_tells_the_model_why(user, conversation, script):
    with script(refund_steps("Understood, no refund.")) as model:
        ws = await connect(user)
        await pause(ws, conversation)
        await ws.send_json_to(
            {"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": False, "reason": "Too expensive"}
        )
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert refunds == []
    assert events[-1]["status"] == "completed"
    tool_result = next(i for i in model.last_call.input if i.get("type") == "function_call_output")
    assert "Too expensive" in tool_result["output"]
    assert history.problems(await stored_history(conversation)) == []
    activity = of_type(events, "message.completed")[0]["activity"]
    assert activity[0]["status"] in ("completed", "rejected")


async def test_expired_approval_ends_the_run_and_frees_the_conversation(user, conversation, script):
    with script([*refund_steps(), streamed("Hello again.")]) as model:
        ws = await connect(user)
        events = await pause(ws, conversation)
        await Run.objects.filter(public_id=events[0]["run"]).aupdate(approval_expires_at=timezone.now() - timedelta(seconds=1))

        await ws.send_json_to({"type": "conversation.open", "conversation": str(conversation.public_id)})
        state = await receive_until(ws, "conversation.state")
        await send_message(ws, conversation, "Hello?", request_id="r2")
        # The expired run's step was never used: the scripted refund answer is skipped.
        model_steps_left = model.remaining_steps
        after = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert state[-1]["run"] is None
    run = await Run.objects.aget(public_id=events[0]["run"])
    assert run.status == Run.Status.CANCELLED and "expired" in run.error
    assert (await Approval.objects.aget(run=run)).status == Approval.Status.EXPIRED
    reply = await Message.objects.aget(run=run, role="assistant")
    assert reply.status == Message.Status.CANCELLED and "expired" in reply.error
    assert model_steps_left == 2 and after[-1]["status"] == "completed"
    assert history.problems(model.last_call.input) == []
    assert refunds == []


async def test_stop_while_waiting_for_approval_cancels_and_keeps_history_valid(user, conversation, script):
    with script([*refund_steps(), streamed("Fine.")]):
        ws = await connect(user)
        await pause(ws, conversation)
        await ws.send_json_to({"type": "run.cancel", "conversation": str(conversation.public_id)})
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert events[-1]["status"] == "cancelled"
    assert of_type(events, "message.completed")[0]["status"] == "cancelled"
    assert history.problems(await stored_history(conversation)) == []
    assert refunds == []


async def test_someone_elses_approval_cannot_be_decided(user, other_user, conversation, script):
    with script(refund_steps()):
        ws = await connect(user)
        await pause(ws, conversation)
        await ws.disconnect()
        intruder = await connect(other_user)
        await intruder.send_json_to(
            {"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": True}
        )
        error = await intruder.receive_json_from()
        await intruder.disconnect()

    assert error["code"] == "not_found"
    assert (await Approval.objects.aget(call_id="call_refund")).status == Approval.Status.PENDING
    assert refunds == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"call_id": "call_refund"}, "invalid_field"),
        ({"call_id": "call_refund", "approve": "yes"}, "invalid_field"),
        ({"approve": True}, "missing_field"),
        ({"call_id": "nope", "approve": True}, "not_found"),
    ],
)
async def test_malformed_decisions_get_clear_errors(user, conversation, frame, code):
    ws = await connect(user)
    await ws.send_json_to({"type": "approval.decide", "conversation": str(conversation.public_id), **frame})
    error = await ws.receive_json_from()
    await ws.disconnect()
    assert error["type"] == "error" and error["code"] == code


async def test_concurrent_decisions_on_two_calls_resume_the_run_exactly_once(user, conversation, script):
    import contextlib
    import threading

    from asgiref.sync import sync_to_async
    from django.db import connection
    from django.db.models.signals import post_save

    two_calls = [
        [
            function_call("refund_order", {"order_number": "A-1", "amount": 1}, call_id="call_one"),
            function_call("refund_order", {"order_number": "A-2", "amount": 2}, call_id="call_two"),
        ],
        streamed("Both refunded."),
    ]
    with script(two_calls):
        ws = await connect(user)
        await pause(ws, conversation)
        await ws.disconnect()
    run = await Run.objects.aget(conversation=conversation)

    results: dict[str, bool] = {}
    barrier = threading.Barrier(2)
    # Hold each decision between writing itself and asking what is still pending, until the
    # other one has written too (or for a second, when a lock keeps the other one out): the
    # interleaving that makes two unlocked decisions both see the other pending, every time.
    both_written = threading.Barrier(2, timeout=1)

    def written(sender, instance, **kwargs) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_written.wait()

    def decide(call_id: str) -> None:
        try:
            barrier.wait()
            results[call_id] = transitions.approval_decide(run=run, call_id=call_id, approve=True, reason="", user=user).resumed
        finally:
            connection.close()

    def both() -> None:
        threads = [threading.Thread(target=decide, args=(call_id,)) for call_id in ("call_one", "call_two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    post_save.connect(written, sender=Approval)
    try:
        await sync_to_async(both, thread_sensitive=False)()
    finally:
        post_save.disconnect(written, sender=Approval)
    # Exactly one of the two decisions saw that nothing else was pending.
    assert sorted(results.values()) == [False, True]


async def test_a_decision_is_refused_while_the_user_is_over_budget_and_the_approval_waits(user, conversation, script, settings):
    from chat.tests.factories import finished_reply

    settings.AGENTS_DAILY_TOKEN_BUDGET = 1000
    with script(refund_steps()) as model:
        ws = await connect(user)
        requested = of_type(await pause(ws, conversation), "approval.requested")[0]
        await sync_to_async(finished_reply)(owner=user, total_tokens=1000)  # spent elsewhere meanwhile
        await ws.send_json_to({"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": True})
        refused = (await receive_until(ws, "error"))[-1]
        await ws.disconnect()

    assert refused["code"] == "quota_exceeded"
    approval = await Approval.objects.aget(call_id="call_refund")
    assert approval.status == Approval.Status.PENDING and refunds == [] and len(model.calls) == 1
    assert (await Run.objects.aget(public_id=requested["run"])).status == Run.Status.AWAITING_APPROVAL


async def test_a_resumed_run_streams_again_and_a_crash_keeps_the_tools_real_outcome(user, conversation, script, settings):
    """The process dies after the approved refund ran: the reply is not left "awaiting
    approval"; it failed, and its tool entry says what the tool really returned."""
    settings.RUN_HEARTBEAT_SECONDS = 0.05
    gate = asyncio.Event()
    steps = [refund_steps()[0], streamed("Your refund ", "is done.", gate=gate)]
    with script(steps):
        ws = await connect(user)
        requested = of_type(await pause(ws, conversation), "approval.requested")[0]
        await ws.send_json_to({"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": "call_refund", "approve": True})
        await receive_until(ws, "tool.output")
        run = await Run.objects.aget(public_id=requested["run"])
        reply = await eventually(lambda: _reply_saved_with_partial_text(run), what="a heartbeat to save the resumed reply")
        assert reply.status == Message.Status.STREAMING
        # The process dies here: its executor is gone and its heartbeat goes stale.
        executor = runs.active_executor(requested["run"])
        executor.task.cancel()
        await asyncio.gather(executor.task, return_exceptions=True)
        await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1), status=Run.Status.RUNNING)
        await sync_to_async(transitions.release_dead_runs)(conversation=conversation)
        await ws.disconnect()

    run = await Run.objects.aget(pk=run.pk)
    reply = await Message.objects.aget(run=run, role="assistant")
    (tool,) = [entry for entry in reply.activity if entry.get("kind") == "tool"]
    assert run.status == Run.Status.INTERRUPTED and reply.status == Message.Status.FAILED
    assert refunds == ["A-1"] and tool["status"] == "completed" and "Refunded 12.50 USD" in tool["output"]
    assert history.problems(await stored_history(conversation)) == []


async def _reply_saved_with_partial_text(run):
    reply = await Message.objects.aget(run=run, role="assistant")
    return reply if "Your refund" in reply.content else None


async def test_approving_parked_runs_respects_the_cap_on_runs_at_once(user, script, settings):
    """Five replies wait for an approval; with a cap of three, approving them one after
    another resumes three, and the other two decisions are refused with `too_many_runs` (their
    approvals still wait, and can be made again once a run has finished)."""
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 3
    settings.RATE_LIMIT_SOCKETS_PER_USER = 0
    conversations = [
        await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
        for _ in range(5)
    ]
    gate = asyncio.Event()
    steps = [refund_steps()[0] for _ in conversations] + [streamed("Refunded ", "it.", gate=gate) for _ in conversations]
    with script(steps):
        ws = await connect(user)
        for conversation in conversations:
            await pause(ws, conversation)
        outcomes = []
        for conversation in conversations:
            try:
                await runs.decide_approval(user=user, conversation=conversation, call_id="call_refund", approve=True)
                outcomes.append("resumed")
            except AppError as exc:
                outcomes.append(exc.code)
        running = await Run.objects.filter(conversation__owner=user, status=Run.Status.RUNNING).acount()
        pending = await Approval.objects.filter(run__conversation__owner=user, status=Approval.Status.PENDING).acount()
        gate.set()
        for run in [r async for r in Run.objects.filter(conversation__owner=user, status=Run.Status.RUNNING)]:
            await runs.wait_for_run(run.public_id)
        # A finished run makes room: the refused decision goes through now.
        await runs.decide_approval(user=user, conversation=conversations[3], call_id="call_refund", approve=True)
        await runs.wait_for_run((await Run.objects.aget(conversation=conversations[3])).public_id)
        await ws.disconnect()

    assert outcomes == ["resumed", "resumed", "resumed", "too_many_runs", "too_many_runs"]
    assert running == 3 and pending == 2
    assert (await Run.objects.aget(conversation=conversations[3])).status == Run.Status.COMPLETED
    assert (await Run.objects.aget(conversation=conversations[4])).status == Run.Status.AWAITING_APPROVAL
