"""Writes to conversations, messages and runs. Synchronous and atomic; async callers wrap
them with `database_sync_to_async`. Nothing here talks to the model or the channel layer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents_app import history
from agents_app.models import AgentSession
from agents_app.registry import get_spec
from agents_app.session import DjangoSession
from chat.models import Approval, Conversation, Message, Run

log = logging.getLogger(__name__)

TITLE_CHARS = 60


class ConversationBusy(Exception):
    """The conversation already has an active run (in this process or another)."""

    code = "busy"
    message = "A reply is still being generated in this conversation. Wait or stop it."


class ApprovalPending(ConversationBusy):
    code = "approval_pending"
    message = "A tool call is waiting for your approval in this conversation. Approve or reject it first."


class NothingToReplace(Exception):
    """Regenerate/edit asked for a turn that does not exist (or is not the last one)."""


@dataclass(frozen=True)
class StartedRun:
    run: Run
    user_message: Message
    reply: Message
    # Messages of the turn this run replaces (edit / regenerate), for clients to remove.
    replaced_message_ids: tuple[str, ...] = ()


@transaction.atomic
def conversation_create(*, owner, agent_key: str, title: str = "") -> Conversation:
    spec = get_spec(agent_key)  # raises UnknownAgent
    return Conversation.objects.create(
        owner=owner, agent_key=spec.key, title=title[:200], current_agent_name=spec.agent.name
    )


def run_create(*, conversation: Conversation, content: str, request_id: str = "") -> StartedRun:
    """Take the conversation's lock and store the user's message and the reply placeholder.

    The lock is the run row itself: a partial unique index allows one active run per
    conversation, so two tabs or two processes racing here get exactly one winner. Runs whose
    process died, or whose approval expired, are released first."""
    return _start(conversation=conversation, content=content, request_id=request_id)


def run_create_replacing_last_turn(
    *, conversation: Conversation, request_id: str = "", edited_message_id=None, content: str | None = None
) -> StartedRun:
    """Regenerate the last reply (same question) or answer an edited last question.

    The superseded turn goes from both places at once, in the same transaction that takes the
    lock: its messages, and its items in the SDK history (everything stored after that run's
    mark), so the model never sees the answer the user threw away."""
    return _start(
        conversation=conversation,
        content=content,
        request_id=request_id,
        replace_last_turn=True,
        edited_message_id=edited_message_id,
    )


def _start(
    *,
    conversation: Conversation,
    content: str | None,
    request_id: str,
    replace_last_turn: bool = False,
    edited_message_id=None,
) -> StartedRun:
    release_dead_runs(conversation=conversation)
    try:
        with transaction.atomic():
            now = timezone.now()
            run = Run.objects.create(
                conversation=conversation,
                agent_name=conversation.current_agent_name,
                request_id=request_id[:64],
                heartbeat_at=now,
            )
            replaced: tuple[str, ...] = ()
            if replace_last_turn:
                content, replaced = _drop_last_turn(
                    conversation=conversation, new_run=run, content=content, edited_message_id=edited_message_id
                )
            user_message = Message.objects.create(
                conversation=conversation, run=run, role=Message.Role.USER, content=content
            )
            reply = Message.objects.create(
                conversation=conversation,
                run=run,
                role=Message.Role.ASSISTANT,
                status=Message.Status.STREAMING,
                agent_name=conversation.current_agent_name,
            )
            if not conversation.title:
                conversation.title = _title_from(content)
            conversation.save(update_fields=["title", "updated_at"])
    except IntegrityError:
        active = Run.objects.active().filter(conversation=conversation).first()
        if active is not None and active.status == Run.Status.AWAITING_APPROVAL:
            raise ApprovalPending() from None
        raise ConversationBusy() from None
    return StartedRun(run=run, user_message=user_message, reply=reply, replaced_message_ids=replaced)


def _drop_last_turn(*, conversation: Conversation, new_run: Run, content: str | None, edited_message_id):
    last = Run.objects.filter(conversation=conversation).exclude(pk=new_run.pk).order_by("-created_at", "-id").first()
    question = last and last.messages.filter(role=Message.Role.USER).first()
    if question is None:
        raise NothingToReplace("There is no reply to regenerate yet.")
    if edited_message_id is not None and question.public_id != edited_message_id:
        raise NothingToReplace("Only the last message can be edited.")
    doomed = list(last.messages.values_list("public_id", flat=True))
    last.messages.all().delete()
    if last.history_mark is not None:
        DjangoSession(conversation.session_id)._truncate_after(last.history_mark)
    # The conversation continues with the agent that started the replaced turn.
    conversation.current_agent_name = last.agent_name or conversation.current_agent_name
    Conversation.objects.filter(pk=conversation.pk).update(current_agent_name=conversation.current_agent_name)
    Run.objects.filter(pk=new_run.pk).update(agent_name=conversation.current_agent_name)
    new_run.agent_name = conversation.current_agent_name
    return (question.content if content is None else content), tuple(str(i) for i in doomed)


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def run_mark_running(*, run: Run, history_mark: int) -> None:
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        history_mark=history_mark,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )


def run_heartbeat(*, run: Run, partial_content: str) -> bool:
    """Prove this process is alive, save the partial reply (so a crash keeps it) and report
    whether someone asked, through the database, to stop the run."""
    Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE_STATUSES).update(heartbeat_at=timezone.now())
    Message.objects.filter(run=run, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING).update(
        content=partial_content
    )
    return Run.objects.filter(pk=run.pk, cancel_requested=True).exists()


def run_request_cancel(*, run: Run) -> bool:
    return bool(Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE_STATUSES).update(cancel_requested=True))


@dataclass
class RunOutcome:
    status: str  # a Run.Status value
    content: str
    agent_name: str
    error: str = ""
    activity: list | None = None
    structured: dict | None = None
    model: str = ""
    usage: dict | None = None
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None
    events: list | None = None  # the run's event log (no deltas), for staff review
    last_seq: int = 0


MESSAGE_STATUS_FOR_RUN = {
    Run.Status.COMPLETED: Message.Status.COMPLETED,
    Run.Status.CANCELLED: Message.Status.CANCELLED,
    Run.Status.FAILED: Message.Status.FAILED,
    Run.Status.BLOCKED: Message.Status.BLOCKED,
    Run.Status.INTERRUPTED: Message.Status.FAILED,
}


@transaction.atomic
def run_finish(*, run: Run, outcome: RunOutcome) -> Message:
    """Store the reply with its usage and release the conversation's lock, in one commit."""
    reply = _store_reply(run=run, outcome=outcome, status=MESSAGE_STATUS_FOR_RUN[outcome.status])
    Run.objects.filter(pk=run.pk).update(
        status=outcome.status,
        error=outcome.error,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
        state="",
        events=outcome.events or [],
        last_seq=outcome.last_seq,
    )
    conversation_fields = {"updated_at": timezone.now()}
    if outcome.status != Run.Status.BLOCKED:
        conversation_fields["current_agent_name"] = outcome.agent_name
    Conversation.objects.filter(pk=run.conversation_id).update(**conversation_fields)
    return reply


def _store_reply(*, run: Run, outcome: RunOutcome, status: str) -> Message:
    usage = outcome.usage or {}
    reply = Message.objects.select_for_update().get(run=run, role=Message.Role.ASSISTANT)
    reply.status = status
    reply.content = outcome.content
    reply.agent_name = outcome.agent_name
    reply.error = outcome.error
    reply.activity = outcome.activity or []
    reply.structured = outcome.structured
    reply.model = outcome.model
    for name in ("requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens"):
        setattr(reply, name, usage.get(name, 0))
    reply.cost = cost_of(model=outcome.model, usage=usage)
    reply.time_to_first_token_ms = outcome.time_to_first_token_ms
    reply.duration_ms = outcome.duration_ms
    reply.save()
    usage_record_store(run=run, reply=reply)
    return reply


USAGE_COUNTS = ("requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def usage_record_store(*, run: Run, reply: Message) -> None:
    """Copy the reply's usage into the ledger (`accounts.UsageRecord`, one row per run; a paused
    run's row is updated when it finishes). The ledger outlives the reply, the run and the
    conversation, so deleting or regenerating never gives tokens back."""
    from accounts.models import UsageRecord

    owner_id, agent_key = Conversation.objects.filter(pk=run.conversation_id).values_list("owner_id", "agent_key").get()
    UsageRecord.objects.update_or_create(
        run=run,
        defaults={
            "user_id": owner_id,
            "conversation_id": run.conversation_id,
            "agent_key": agent_key,
            "model": reply.model,
            "cost": reply.cost,
            "created_at": reply.created_at,
            **{name: getattr(reply, name) for name in USAGE_COUNTS},
        },
    )


# --- Human in the loop ---------------------------------------------------------------
class ApprovalNotFound(Exception):
    pass


class ApprovalAlreadyDecided(Exception):
    def __init__(self, approval: Approval) -> None:
        super().__init__(f"This tool call was already {approval.status}.")
        self.approval = approval


@transaction.atomic
def run_pause(*, run: Run, state: str, approvals: list[dict], outcome: RunOutcome) -> list[Approval]:
    """Park a run that waits for tool approvals: its serialised state stays in the database
    (never sent to a client), the lock stays held, and any process can resume it."""
    expires_at = timezone.now() + timedelta(seconds=settings.AGENTS_APPROVAL_TTL_SECONDS)
    _store_reply(run=run, outcome=outcome, status=Message.Status.AWAITING_APPROVAL)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.AWAITING_APPROVAL,
        state=state,
        approval_expires_at=expires_at,
        events=outcome.events or [],
        last_seq=outcome.last_seq,
        heartbeat_at=timezone.now(),
    )
    return Approval.objects.bulk_create(
        [
            Approval(
                run=run,
                call_id=item["call_id"],
                tool_name=item["name"],
                arguments=item["arguments"],
                agent_name=item["agent"],
            )
            for item in approvals
        ]
    )


@transaction.atomic
def approval_decide(*, run: Run, call_id: str, approve: bool, reason: str, user) -> tuple[Approval, bool]:
    """Record one decision. Returns the approval and whether every approval of the run is now
    decided (then the run can resume)."""
    # Lock the run first: decisions on its approvals from two processes at once must not both
    # see the other one still pending (then nobody would resume the run).
    Run.objects.select_for_update().filter(pk=run.pk).first()
    approval = Approval.objects.select_for_update().filter(run=run, call_id=call_id).first()
    if approval is None:
        raise ApprovalNotFound()
    if approval.status != Approval.Status.PENDING:
        raise ApprovalAlreadyDecided(approval)
    approval.status = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    approval.reason = reason
    approval.decided_by = user
    approval.decided_at = timezone.now()
    approval.save()
    return approval, not run.approvals.pending().exists()


def run_claim_paused(*, run: Run) -> bool:
    """Compare-and-set a paused run to running: exactly one process resumes it."""
    return bool(
        Run.objects.filter(pk=run.pk, status=Run.Status.AWAITING_APPROVAL).update(
            status=Run.Status.RUNNING, heartbeat_at=timezone.now(), cancel_requested=False
        )
    )


@transaction.atomic
def end_paused_run(*, run: Run, status: str, error: str, approval_status: str) -> Message | None:
    """End a run that waits for approval without running it further (stopped, or expired):
    release the lock, close its turn in the SDK history, and say why on the reply."""
    won = Run.objects.filter(pk=run.pk, status=Run.Status.AWAITING_APPROVAL).update(
        status=status, error=error, finished_at=timezone.now(), state=""
    )
    if not won:
        return None
    run.approvals.pending().update(status=approval_status, decided_at=timezone.now())
    reply = Message.objects.select_for_update().get(run=run, role=Message.Role.ASSISTANT)
    reply.status = MESSAGE_STATUS_FOR_RUN[status]
    reply.error = error
    for entry in reply.activity:
        if entry.get("status") in ("running", "awaiting_approval"):
            entry["status"] = approval_status
    reply.save()
    if run.history_mark is not None:
        history.close_turn_sync(
            run.conversation.session_id, mark=run.history_mark, ending=history.ending_for(status, reply.content, error)
        )
    return reply


def expire_approvals(*, conversation: Conversation | None = None) -> int:
    overdue = Run.objects.filter(status=Run.Status.AWAITING_APPROVAL, approval_expires_at__lt=timezone.now())
    if conversation is not None:
        overdue = overdue.filter(conversation=conversation)
    ended = 0
    for run in overdue.select_related("conversation"):
        reply = end_paused_run(
            run=run,
            status=Run.Status.CANCELLED,
            error="The approval request expired before anyone answered it.",
            approval_status=Approval.Status.EXPIRED,
        )
        ended += reply is not None
    return ended


def release_dead_runs(*, conversation: Conversation | None = None) -> int:
    """Free conversations held by runs that will never finish on their own."""
    return interrupt_stale_runs(conversation=conversation) + expire_approvals(conversation=conversation)


def cost_of(*, model: str, usage: dict) -> Decimal | None:
    """USD for this usage, or None when the model has no price (unknown is not free).

    A price set in admin (`ModelPrice`) wins over `settings.AGENTS_PRICING` (which
    `AGENTS_PRICING_JSON` extends); both are tried for the full label, then for the name after
    the last "/" (e.g. "openrouter/gpt-4.1-mini")."""
    prices = None
    for name in dict.fromkeys([model, model.rsplit("/", 1)[-1]]):
        prices = _admin_price(name) or settings.AGENTS_PRICING.get(name)
        if prices is not None:
            break
    if prices is None:
        if model.startswith("local/"):
            prices = settings.AGENTS_PRICING["local"]
        else:
            return None
    million, precision = Decimal(1_000_000), Decimal("0.00000001")
    cached = usage.get("cached_tokens", 0)
    uncached = max(usage.get("input_tokens", 0) - cached, 0)
    return ((
        Decimal(uncached) * Decimal(prices["input"])
        + Decimal(cached) * Decimal(prices.get("cached_input", prices["input"]))
        + Decimal(usage.get("output_tokens", 0)) * Decimal(prices["output"])
    ) / million).quantize(precision)


def _admin_price(model: str) -> dict | None:
    from agents_app.models import ModelPrice

    row = ModelPrice.objects.filter(model=model).first() if model else None
    if row is None:
        return None
    cached = row.cached_input_per_million
    return {
        "input": row.input_per_million,
        "cached_input": row.input_per_million if cached is None else cached,
        "output": row.output_per_million,
    }


def interrupt_stale_runs(*, conversation: Conversation | None = None) -> int:
    """Mark runs whose process died as interrupted: keep their partial reply, close their
    turn in the SDK history, release the lock. Safe to run from any process at any time."""
    stale = Run.objects.stale()
    if conversation is not None:
        stale = stale.filter(conversation=conversation)
    count = 0
    for run in stale.select_related("conversation"):
        count += _interrupt(run)
    return count


@transaction.atomic
def _interrupt(run: Run) -> int:
    # Compare-and-set: only one process wins, and a run that beat meanwhile is left alone.
    won = Run.objects.filter(pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at).update(
        status=Run.Status.INTERRUPTED,
        error="The server stopped before this reply finished.",
        finished_at=timezone.now(),
    )
    if not won:
        return 0
    reply = Message.objects.filter(run=run, role=Message.Role.ASSISTANT).first()
    partial = reply.content if reply else ""
    if reply and reply.status == Message.Status.STREAMING:
        reply.status = Message.Status.FAILED
        reply.error = "The server stopped before this reply finished."
        reply.save(update_fields=["status", "error", "updated_at"])
    if run.history_mark is not None:
        history.close_turn_sync(
            run.conversation.session_id, mark=run.history_mark, ending=history.ending_for("interrupted", partial)
        )
    log.warning("run %s interrupted: heartbeat stale since %s", run.public_id, run.heartbeat_at)
    return 1

@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation with its messages, runs and SDK history."""
    AgentSession.objects.filter(session_id=conversation.session_id).delete()
    conversation.delete()
