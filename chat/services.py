"""Writes to conversations, messages and runs. Synchronous and atomic; async callers wrap
them with `database_sync_to_async`. Nothing here talks to the model or the channel layer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents_app import history
from agents_app.models import AgentSession
from agents_app.registry import get_spec
from chat.models import Conversation, Message, Run

log = logging.getLogger(__name__)

TITLE_CHARS = 60


class ConversationBusy(Exception):
    """The conversation already has an active run (in this process or another)."""


@dataclass(frozen=True)
class StartedRun:
    run: Run
    user_message: Message
    reply: Message


@transaction.atomic
def conversation_create(*, owner, agent_key: str, title: str = "") -> Conversation:
    spec = get_spec(agent_key)  # raises UnknownAgent
    return Conversation.objects.create(
        owner=owner, agent_key=spec.key, title=title[:200], current_agent_name=spec.agent.name
    )


def run_create(*, conversation: Conversation, content: str, request_id: str = "") -> StartedRun:
    """Take the conversation's lock and store the user's message and the reply placeholder.

    The lock is the run row itself: a partial unique index allows one active run per
    conversation, so two tabs or two processes racing here get exactly one winner. A run
    whose process stopped beating is released first (marked interrupted)."""
    interrupt_stale_runs(conversation=conversation)
    try:
        with transaction.atomic():
            now = timezone.now()
            run = Run.objects.create(
                conversation=conversation,
                agent_name=conversation.current_agent_name,
                request_id=request_id[:64],
                heartbeat_at=now,
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
        raise ConversationBusy() from None
    return StartedRun(run=run, user_message=user_message, reply=reply)


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def run_mark_running(*, run: Run, history_mark: int, control_channel: str) -> None:
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        history_mark=history_mark,
        control_channel=control_channel,
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
    usage = outcome.usage or {}
    reply = Message.objects.select_for_update().get(run=run, role=Message.Role.ASSISTANT)
    reply.status = MESSAGE_STATUS_FOR_RUN[outcome.status]
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
    Run.objects.filter(pk=run.pk).update(
        status=outcome.status, error=outcome.error, finished_at=timezone.now(), heartbeat_at=timezone.now()
    )
    conversation_fields = {"updated_at": timezone.now()}
    if outcome.status != Run.Status.BLOCKED:
        conversation_fields["current_agent_name"] = outcome.agent_name
    Conversation.objects.filter(pk=run.conversation_id).update(**conversation_fields)
    return reply


def cost_of(*, model: str, usage: dict) -> Decimal | None:
    """USD for this usage, or None when the model has no price (unknown is not free)."""
    prices = settings.AGENTS_PRICING.get(model) or settings.AGENTS_PRICING.get(model.rsplit("/", 1)[-1])
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
