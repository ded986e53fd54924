"""The catalog's tools that need the user's approval: refunds (orders agent) and
high-priority tickets (support agent), driven through the socket."""

from __future__ import annotations

import pytest
from agents.testing import function_call
from asgiref.sync import sync_to_async

from agents_app.catalog.orders import OrderStatus
from agents_app.models import Order, Ticket
from agents_app.tests.chatting import fast_password_hashing, new_conversation, structured  # noqa: F401
from agents_app.tests.factories import OrderFactory
from chat.tests.helpers import connect, of_type, receive_until, send_message
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)

REFUNDED = OrderStatus(
    order_number="QM-30001", found=True, status="delivered", items=[], total="$49.90", carrier=None,
    estimated_delivery=None, summary="Your refund is on its way.",
)


async def ask_and_decide(user, conversation, content: str, *, approve: bool) -> tuple[list[dict], list[dict]]:
    ws = await connect(user)
    try:
        await send_message(ws, conversation, content)
        paused = await receive_until(ws, "run.paused")
        call_id = of_type(paused, "approval.requested")[0]["call_id"]
        await ws.send_json_to(
            {"type": "approval.decide", "conversation": str(conversation.public_id), "call_id": call_id, "approve": approve}
        )
        return paused, await receive_until(ws, "run.finished")
    finally:
        await ws.disconnect()


@pytest.mark.parametrize("approve", [True, False])
async def test_refund_happens_only_after_the_user_approves_it(user, script, approve):
    order = await sync_to_async(OrderFactory)(owner=user, number="QM-30001", status=Order.Status.DELIVERED)
    conversation = await new_conversation(user, "orders")
    steps = [
        [function_call("refund_order", {"order_number": "qm 30001", "reason": "arrived broken"}, call_id="call_refund")],
        structured(REFUNDED),
    ]
    with script(steps):
        paused, finished = await ask_and_decide(user, conversation, "Refund QM-30001 please, it arrived broken", approve=approve)

    requested = of_type(paused, "approval.requested")[0]
    assert requested["name"] == "refund_order" and requested["arguments"]["order_number"] == "qm 30001"
    await order.arefresh_from_db()
    assert finished[-1]["status"] == "completed"
    summary = of_type(finished, "message.completed")[0]["structured"]["data"]["summary"]
    if approve:
        assert order.refunded_at is not None and order.refund_reason == "arrived broken"
        assert "Refund of $49.90 issued" in of_type(finished, "tool.output")[0]["output"]
        assert summary.startswith("Refund of $49.90 issued for order QM-30001.")
    else:
        assert order.refunded_at is None
        # The answer comes from what happened, not from the model: no refund is promised.
        assert summary == "No refund was made: you did not approve it."


async def test_someone_elses_order_cannot_be_refunded_even_when_approved(user, other_user, script):
    theirs = await sync_to_async(OrderFactory)(owner=other_user, number="QM-30002")
    conversation = await new_conversation(user, "orders")
    steps = [
        [function_call("refund_order", {"order_number": "QM-30002", "reason": "x"}, call_id="call_refund")],
        structured(REFUNDED),
    ]
    with script(steps):
        _, finished = await ask_and_decide(user, conversation, "Refund QM-30002", approve=True)

    output = of_type(finished, "tool.output")[0]
    assert output["failed"] is True and "no order QM-30002" in output["output"]
    summary = of_type(finished, "message.completed")[0]["structured"]["data"]["summary"]
    assert summary == "No refund was made: there is no order QM-30002 on this account."
    await theirs.arefresh_from_db()
    assert theirs.refunded_at is None


async def test_high_priority_ticket_waits_for_approval_but_normal_ones_do_not(user, script):
    conversation = await new_conversation(user, "support")
    urgent = {"subject": "Charged twice", "description": "Two charges this month.", "priority": "high"}
    normal = {"subject": "Dark mode idea", "description": "Please add dark mode.", "priority": "normal"}
    with script([
        [function_call("create_support_ticket", urgent, call_id="call_urgent")],
        streamed("Ticket opened."),
        [function_call("create_support_ticket", normal, call_id="call_normal")],
        streamed("Ticket opened."),
    ]):
        _, finished = await ask_and_decide(user, conversation, "I was charged twice!", approve=True)
        ws = await connect(user)
        await send_message(ws, conversation, "Also, an idea: dark mode", request_id="r2")
        second = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert finished[-1]["status"] == "completed"
    assert not of_type(second, "approval.requested") and second[-1]["status"] == "completed"
    subjects = [t async for t in Ticket.objects.filter(owner=user).order_by("created_at").values_list("subject", "priority")]
    assert subjects == [("Charged twice", "high"), ("Dark mode idea", "normal")]
