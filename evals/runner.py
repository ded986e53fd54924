"""Running cases through the real run service, exactly the path a socket message takes:
`chat.services.conversation_create`, `chat.engine.start`, `chat.engine.wait_for_run`, then the
stored reply (`chat.models.Message`, its `activity`) and run (`chat.models.Run`).

The evaluation has its own users (a customer, a staff member, and someone else whose order
the customer must never see), and its own orders (numbers QM-51xxx / QM-59xxx, reset before
every evaluation). Each case gets a fresh conversation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from agents_app.models import Order, Ticket
from agents_app.session import DjangoSession
from chat import engine, services
from chat.models import Approval, Conversation, Message, Run
from evals.cases import Case
from evals.judge import Observation, ToolUse, Verdict, judge

log = logging.getLogger(__name__)

CASE_TIMEOUT = 600.0  # seconds for one turn; the local model can queue behind others

CUSTOMER = {"username": "eval-customer", "email": "eval-customer@example.invalid", "first_name": "Robin", "last_name": "Fischer"}
STAFF = {"username": "eval-staff", "email": "eval-staff@example.invalid", "first_name": "Sam", "last_name": "Okafor", "is_staff": True}
STRANGER = {"username": "eval-stranger", "email": "eval-stranger@example.invalid", "first_name": "Kim", "last_name": "Lee"}

# (number, owner, status, items, total, carrier, days until delivery, refunded)
ORDERS = [
    ("QM-51207", "customer", "shipped", [("Quillmate Plus, 1 year", 1), ("Desk lamp", 1)], "74.50", "DHL", 3, False),
    ("QM-51344", "customer", "delivered", [("Stylus pen", 2)], "39.80", "UPS", -4, False),
    ("QM-51590", "customer", "processing", [("Sticker pack", 3)], "12.00", "", None, False),
    ("QM-51612", "customer", "cancelled", [("Leather notebook cover", 1)], "29.00", "", None, False),
    ("QM-51788", "customer", "delivered", [("Quillmate mug", 1)], "15.00", "DPD", -20, True),
    ("QM-59001", "stranger", "shipped", [("Mechanical keyboard", 1)], "129.00", "FedEx", 2, False),
]


@dataclass
class Users:
    customer: object
    staff: object
    stranger: object

    def for_case(self, case: Case):
        return self.staff if case.user == "staff" else self.customer


@transaction.atomic
def prepare() -> Users:
    """The evaluation's users and orders, reset to the state every case starts from. Their
    earlier evaluation conversations and tickets go, so the database holds the latest run."""
    User = get_user_model()
    users = {}
    for key, fields in (("customer", CUSTOMER), ("staff", STAFF), ("stranger", STRANGER)):
        fields = dict(fields)
        user, _ = User.objects.get_or_create(username=fields.pop("username"), defaults=fields)
        for name, value in fields.items():
            setattr(user, name, value)
        user.set_unusable_password()
        user.save()
        users[key] = user
    for conversation in Conversation.objects.filter(owner__in=users.values()):
        engine.delete_now(conversation=conversation)
    Ticket.objects.filter(owner__in=users.values()).delete()
    today = timezone.localdate()
    for number, owner, status, items, total, carrier, days, refunded in ORDERS:
        Order.objects.update_or_create(
            number=number,
            defaults={
                "owner": users[owner],
                "status": status,
                "items": [{"name": name, "quantity": quantity} for name, quantity in items],
                "total": Decimal(total),
                "carrier": carrier,
                "estimated_delivery": today + timedelta(days=days) if days is not None else None,
                "refunded_at": timezone.now() - timedelta(days=3) if refunded else None,
                "refund_reason": "Arrived late." if refunded else "",
            },
        )
    return Users(**users)


def reset_refunds() -> None:
    """Undo the refunds a case made (an approved refund is real), so the next case starts clean."""
    for number, _owner, _status, _items, _total, _carrier, _days, refunded in ORDERS:
        if not refunded:
            Order.objects.filter(number=number).update(refunded_at=None, refund_reason="")


@sync_to_async
def _seed(conversation: Conversation, case: Case) -> list[dict]:
    """Earlier turns, as if they had happened: visible messages, the SDK history, and the
    agent that answered them (the conversation continues with it)."""
    items = []
    for user_text, assistant_text in case.history:
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=user_text)
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content=assistant_text,
            agent_name=case.history_agent,
        )
        items += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": [{"type": "output_text", "text": assistant_text}], "type": "message", "status": "completed"},
        ]
    if case.history_agent:
        conversation.current_agent_name = case.history_agent
        conversation.save(update_fields=["current_agent_name"])
    return items


async def _turn(user, conversation: Conversation, content: str, *, request_id: str, timeout: float) -> Run:
    started = await engine.start(user=user, conversation=conversation, content=content, request_id=request_id)
    run_id = str(started.run.public_id)
    try:
        await asyncio.wait_for(engine.wait_for_run(run_id), timeout)
    except TimeoutError:
        log.warning("case turn %s took over %ss; stopping it", request_id, timeout)
        await engine.stop(conversation=conversation)
        await engine.wait_for_run(run_id)
    return await Run.objects.aget(pk=started.run.pk)


async def _decide(case: Case, user, conversation: Conversation, run: Run, *, timeout: float) -> Run:
    """A run waiting for approval: the case's decision (approve, reject, or nobody answers and
    the user stops it). Returns the run as it ended."""
    if case.approval == "leave":
        await engine.stop(conversation=conversation)
    else:
        async for approval in Approval.objects.filter(run=run, status=Approval.Status.PENDING):
            await engine.decide(
                user=user, conversation=conversation, call_id=approval.call_id, approve=case.approval == "approve"
            )
        try:
            await asyncio.wait_for(engine.wait_for_run(str(run.public_id)), timeout)
        except TimeoutError:
            await engine.stop(conversation=conversation)
            await engine.wait_for_run(str(run.public_id))
    return await Run.objects.aget(pk=run.pk)


async def _reply(run: Run) -> Message:
    return await Message.objects.aget(run=run, role=Message.Role.ASSISTANT)


def _tools(reply: Message, approvals: list[Approval]) -> list[ToolUse]:
    tools = [
        ToolUse(name=entry.get("name", ""), arguments=entry.get("arguments"), status=entry.get("status", ""))
        for entry in reply.activity
        if entry.get("kind") == "tool"
    ]
    listed = {(t.name, str(t.arguments)) for t in tools}
    for approval in approvals:  # a call awaiting approval may not be in the activity yet
        if (approval.tool_name, str(approval.arguments)) not in listed:
            tools.append(ToolUse(name=approval.tool_name, arguments=approval.arguments, status="awaiting_approval"))
    return tools


async def run_case(case: Case, users: Users, *, timeout: float = CASE_TIMEOUT) -> Verdict:
    user = users.for_case(case)
    conversation = await sync_to_async(services.conversation_create)(owner=user, agent_key=case.agent)
    if case.history:
        items = await _seed(conversation, case)
        await DjangoSession(conversation.session_id).add_items(items)
        await conversation.arefresh_from_db()
    for index, earlier in enumerate(case.before):
        run = await _turn(user, conversation, earlier, request_id=f"eval-{case.id}-{index}", timeout=timeout)
        if run.status == Run.Status.AWAITING_APPROVAL:
            await _decide(case, user, conversation, run, timeout=timeout)
    tickets_before = await Ticket.objects.filter(conversation=conversation).acount()

    run = await _turn(user, conversation, case.message, request_id=f"eval-{case.id}", timeout=timeout)
    reply = await _reply(run)
    approvals = [a async for a in Approval.objects.filter(run=run)]
    seen = Observation(
        status=run.status,
        content=reply.content,
        answered_by=reply.agent_name,
        structured=reply.structured,
        error=reply.error or run.error,
        time_to_first_token_ms=reply.time_to_first_token_ms,
        duration_ms=reply.duration_ms,
        approvals=[a.tool_name for a in approvals],
    )
    if run.status == Run.Status.AWAITING_APPROVAL:
        run = await _decide(case, user, conversation, run, timeout=timeout)
        if case.approval != "leave":
            reply = await _reply(run)
            seen.final_status = run.status
            seen.content, seen.structured = reply.content, reply.structured
            seen.error = reply.error or run.error
            if reply.duration_ms is not None:
                seen.duration_ms = (seen.duration_ms or 0) + reply.duration_ms
    seen.tools = _tools(reply, approvals)
    seen.handoffs = [entry["agent"] for entry in reply.activity if entry.get("kind") == "handoff"]
    seen.answered_by = reply.agent_name
    seen.tickets_opened = await Ticket.objects.filter(conversation=conversation).acount() - tickets_before
    seen.orders_refunded = [
        number
        async for number in Order.objects.filter(
            owner=user, refunded_at__gte=run.created_at, number__in=[o[0] for o in ORDERS]
        ).values_list("number", flat=True)
    ]
    await sync_to_async(reset_refunds)()
    return judge(case, seen)


async def run_cases(
    cases: list[Case],
    *,
    timeout: float = CASE_TIMEOUT,
    on_result: Callable[[Case, Verdict, float], Awaitable[None] | None] | None = None,
) -> list[Verdict]:
    """Every case, one after another (the local model generates one reply at a time anyway)."""
    users = await sync_to_async(prepare)()
    verdicts = []
    for case in cases:
        started = time.monotonic()
        try:
            verdict = await run_case(case, users, timeout=timeout)
        except Exception as exc:  # one broken case must not end the evaluation
            log.exception("case %s could not run", case.id)
            verdict = judge(case, Observation(status="failed", content="", answered_by="", error=f"harness: {exc!r}"))
        verdicts.append(verdict)
        if on_result is not None:
            result = on_result(case, verdict, time.monotonic() - started)
            if asyncio.iscoroutine(result):
                await result
    return verdicts
