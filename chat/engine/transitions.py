"""The run's transitions in the database: admit and create, mark running, beat, pause,
decide, resume, finish, interrupt, expire. Synchronous and atomic; the engine wraps them with
`sync_to_async`. Nothing here talks to the model or the channel layer. Refusals are
`AppError`s, which every transport shows the same way."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents_app import history
from agents_app.session import DjangoSession
from chat import activity, wire
from chat.models import Approval, Conversation, Message, Run
from chat.transcript import ToolStatus, settle_tools
from config.errors import AppError
from usage.quotas import check_quota
from usage.services import copy_counts, usage_record_store, usage_release, usage_reserve

log = logging.getLogger(__name__)

TITLE_CHARS = 60


class ConversationBusy(AppError):
    """The conversation already has an active run (in this process or another)."""

    code = "busy"
    message = "A reply is still being generated in this conversation. Wait or stop it."


class ApprovalPending(ConversationBusy):
    code = "approval_pending"
    message = "A tool call is waiting for your approval in this conversation. Approve or reject it first."


class NothingToReplace(AppError):
    """Regenerate/edit asked for a turn that does not exist (or is not the last one)."""

    code = "not_editable"


@dataclass(frozen=True)
class StartedRun:
    run: Run
    user_message: Message
    reply: Message
    # Messages of the turn this run replaces (edit / regenerate), for clients to remove.
    replaced_message_ids: tuple[str, ...] = ()
    # Tokens of the owner's budget left when the run was admitted (None: unlimited).
    allowance: int | None = None


@dataclass(frozen=True)
class Decision:
    approval: Approval
    resumed: bool  # it was the last decision pending, and the run was admitted again
    allowance: int | None = None  # as in StartedRun


def run_create(*, conversation: Conversation, content: str, request_id: str = "", model_key: str | None = None) -> StartedRun:
    """Take the conversation's lock and store the user's message and the reply placeholder;
    with `model_key` (a model the user may pick, `providers.pickable`), the conversation runs on
    that model from this turn on.

    The lock is the run row itself: a partial unique index allows one active run per
    conversation, so two tabs or two processes racing here get exactly one winner. Runs whose
    process died, or whose approval expired, are released first."""
    return _start(conversation=conversation, content=content, request_id=request_id, model_key=model_key)


def run_create_replacing_last_turn(
    *,
    conversation: Conversation,
    request_id: str = "",
    edited_message_id=None,
    content: str | None = None,
    model_key: str | None = None,
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
        model_key=model_key,
    )


def _start(
    *,
    conversation: Conversation,
    content: str | None,
    request_id: str,
    replace_last_turn: bool = False,
    edited_message_id=None,
    model_key: str | None = None,
) -> StartedRun:
    start = functools.partial(
        _start_once,
        conversation=conversation,
        content=content,
        request_id=request_id,
        replace_last_turn=replace_last_turn,
        edited_message_id=edited_message_id,
        model_key=model_key,
    )
    try:
        return start()
    except ConversationBusy:  # approval_pending too
        # A run whose process died, or whose approval expired, may be what holds the
        # conversation: release such runs and try once more. Looked for only here, when the
        # conversation is found busy, not on every message (two queries each).
        if not release_dead_runs(conversation=conversation):
            raise
        return start()


def _start_once(
    *,
    conversation: Conversation,
    content: str | None,
    request_id: str,
    replace_last_turn: bool,
    edited_message_id,
    model_key: str | None,
) -> StartedRun:
    picked = conversation.model_key if model_key is None else model_key
    try:
        with transaction.atomic():
            allowance = admit(conversation=conversation, model_key=picked)
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
            conversation.model_key = picked
            conversation.save(update_fields=["title", "model_key", "updated_at"])
            usage_reserve(
                run_id=run.pk, user_id=conversation.owner_id, conversation_id=conversation.pk,
                agent_key=conversation.agent_key, created_at=reply.created_at, new_run=True,
            )
    except IntegrityError:
        _refuse_busy(conversation)
    return StartedRun(
        run=run, user_message=user_message, reply=reply, replaced_message_ids=replaced, allowance=allowance
    )


def _refuse_busy(conversation: Conversation) -> None:
    active = Run.objects.active_in(conversation).first()
    if active is not None and active.status == Run.Status.AWAITING_APPROVAL:
        raise ApprovalPending() from None
    raise ConversationBusy() from None


def admit(*, conversation: Conversation, resuming: Run | None = None, model_key: str | None = None) -> int | None:
    """May a run of the conversation execute now: a new one (a message, an edit, a
    regeneration) or, with `resuming`, a parked one whose approvals are all decided? The one
    admission of every way into a run, inside the caller's transaction:

    * this process is not draining (`shutting_down`);
    * the agent exists for the owner (`unknown_agent`: staff-only, for someone no longer staff)
      and the model the run would use can answer (`provider_not_configured`);
    * nothing else runs in the conversation (`busy` / `approval_pending`);
    * the owner has fewer than AGENTS_MAX_ACTIVE_RUNS_PER_USER runs executing (`too_many_runs`);
    * the owner's budget has room for the run's reservation (`quota_exceeded`).

    Under a lock on the owner's row, so the checks and the run they admit are one step for
    every process: parallel messages, or decisions, cannot all pass a budget or a cap that
    each of them alone would pass. Returns the run's allowance: the tokens of the budget left
    (None: unlimited), against which each of its model calls after the first is admitted
    (`chat.engine.metering`)."""
    from agents_app import providers
    from chat import services
    from chat.engine.process import engine

    engine.refuse_new_runs()
    User = get_user_model()
    owner = User.objects.select_for_update().get(pk=conversation.owner_id)
    spec = services.agent_for(user=owner, agent_key=conversation.agent_key)
    picked = conversation.model_key if model_key is None else model_key
    providers.require_provider(providers.key_for(conversation_model=picked, agent_model=spec.model))
    if resuming is None and Run.objects.active_in(conversation).exists():
        _refuse_busy(conversation)
    running = Run.objects.filter(conversation__owner=owner, status__in=(Run.Status.QUEUED, Run.Status.RUNNING)).count()
    cap = settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER
    if cap and running >= cap:
        raise AppError(
            "too_many_runs",
            f"You already have {running} replies being generated (at most {cap} at a time). "
            "Wait for one to finish, or stop one.",
            retry_after=5,
        )
    return check_quota(user=owner).remaining


def _drop_last_turn(*, conversation: Conversation, new_run: Run, content: str | None, edited_message_id):
    last = Run.objects.filter(conversation=conversation).exclude(pk=new_run.pk).order_by("-created_at", "-id").first()
    question = last and last.messages.filter(role=Message.Role.USER).first()
    if question is None:
        raise NothingToReplace(message="There is no reply to regenerate yet.")
    if edited_message_id is not None and question.public_id != edited_message_id:
        raise NothingToReplace(message="Only the last message can be edited.")
    doomed = list(last.messages.values_list("public_id", flat=True))
    last.messages.all().delete()
    if last.history_mark is not None:
        DjangoSession(conversation.session_id).truncate_after_sync(last.history_mark)
    # The conversation continues with the agent that started the replaced turn.
    conversation.current_agent_name = last.agent_name or conversation.current_agent_name
    Conversation.objects.filter(pk=conversation.pk).update(current_agent_name=conversation.current_agent_name)
    Run.objects.filter(pk=new_run.pk).update(agent_name=conversation.current_agent_name)
    new_run.agent_name = conversation.current_agent_name
    return (question.content if content is None else content), tuple(str(i) for i in doomed)


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def run_mark_running(*, run: Run, history_mark: int | None = None) -> int:
    """The run starts executing; `history_mark` (default: the newest stored SDK item, read
    here in the same trip to the database) is where a blocked run rolls back to."""
    if history_mark is None:
        history_mark = DjangoSession(run.conversation.session_id).last_item_id_sync()
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        history_mark=history_mark,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    return history_mark


@dataclass(frozen=True)
class Beat:
    """One run in a heartbeat: its id, and its partial reply when that changed (else None)."""

    run_id: int
    content: str | None = None
    activity: list | None = None


@transaction.atomic
def runs_heartbeat(*, beats: list[Beat]) -> set[int]:
    """Prove this process alive for all its runs at once, save the partial replies that changed
    (so a crash keeps them), and return the runs someone asked, through the database, to stop.
    One update for every run, one per changed reply, one read."""
    ids = [beat.run_id for beat in beats]
    Run.objects.filter(pk__in=ids, status__in=Run.ACTIVE_STATUSES).update(heartbeat_at=timezone.now())
    for beat in beats:
        if beat.content is not None:
            Message.objects.filter(run_id=beat.run_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING).update(
                content=beat.content, activity=beat.activity
            )
    return set(Run.objects.filter(pk__in=ids, cancel_requested=True).values_list("pk", flat=True))


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
    usage_estimated: bool = False  # part of `usage` counted here (a model call cut short)
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
    """Store the reply with its usage and release the conversation's lock, in one commit.

    Compare-and-set: a run that another process declared dead meanwhile (its heartbeat stalled)
    has had its turn closed and its lock released; its late outcome is not written over that."""
    won = Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE_STATUSES).update(
        status=outcome.status,
        error=outcome.error,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
        state="",
        events=outcome.events or [],
        last_seq=outcome.last_seq,
    )
    if not won:
        log.warning("run %s ended after it was declared dead; its outcome is not stored", run.public_id)
        return Message.objects.get(run=run, role=Message.Role.ASSISTANT)
    reply = _store_reply(run=run, outcome=outcome, status=MESSAGE_STATUS_FOR_RUN[outcome.status])
    conversation_fields = {"updated_at": timezone.now()}
    if outcome.status != Run.Status.BLOCKED:
        conversation_fields["current_agent_name"] = outcome.agent_name
    Conversation.objects.filter(pk=run.conversation_id).update(**conversation_fields)
    return reply


def _store_reply(*, run: Run, outcome: RunOutcome, status: str) -> Message:
    """The reply as the run ended, with its usage recorded in the ledger (`usage`) in the same
    transaction; the reply keeps a copy of the counts for display."""
    reply = Message.objects.select_for_update().get(run=run, role=Message.Role.ASSISTANT)
    reply.status = status
    reply.content = outcome.content
    reply.agent_name = outcome.agent_name
    reply.error = outcome.error
    reply.activity = outcome.activity or []
    reply.structured = outcome.structured
    reply.time_to_first_token_ms = outcome.time_to_first_token_ms
    reply.duration_ms = outcome.duration_ms
    if Run.conversation.is_cached(run):
        owner_id, agent_key = run.conversation.owner_id, run.conversation.agent_key
    else:
        owner_id, agent_key = (
            Conversation.objects.filter(pk=run.conversation_id).values_list("owner_id", "agent_key").get()
        )
    record = usage_record_store(
        run_id=run.pk,
        user_id=owner_id,
        conversation_id=run.conversation_id,
        agent_key=agent_key,
        model=outcome.model,
        counts=outcome.usage or {},
        created_at=reply.created_at,
        estimated=outcome.usage_estimated,
    )
    copy_counts(record, reply)
    reply.save()
    return reply


def run_reserve_seq(*, run: Run, count: int) -> int:
    """Reserve `count` event numbers of a run executing nowhere (a parked run ended from any
    process); returns the last seq before them."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().only("last_seq").get(pk=run.pk)
        Run.objects.filter(pk=run.pk).update(last_seq=locked.last_seq + count)
    return locked.last_seq


# --- Human in the loop ---------------------------------------------------------------
APPROVAL_NOT_FOUND = "No such tool call is waiting for approval."


@transaction.atomic
def run_pause(*, run: Run, state: str, approvals: list[dict], outcome: RunOutcome) -> list[Approval]:
    """Park a run that waits for tool approvals: its serialised state stays in the database
    (never sent to a client), the lock stays held, and any process can resume it."""
    expires_at = timezone.now() + timedelta(seconds=settings.AGENTS_APPROVAL_TTL_SECONDS)
    _store_reply(run=run, outcome=outcome, status=Message.Status.AWAITING_APPROVAL)
    usage_release(run_id=run.pk)  # a parked run uses nothing until someone decides
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
def approval_decide(*, run: Run, call_id: str, approve: bool, reason: str, user) -> Decision:
    """Record one decision and, when it was the last one pending, resume the run: admitted
    like any run (`admit`, under the owner's lock), then claimed running with a new
    reservation. Says whether the run resumed (then the caller executes it). One transaction: a decision the admission refuses (`too_many_runs`,
    `quota_exceeded`, …) is not recorded either, and the user can decide again later."""
    conversation = Conversation.objects.get(pk=run.conversation_id)
    # Lock the owner, then the run: decisions on its approvals from two processes at once must
    # not both see the other one still pending (then nobody would resume the run).
    get_user_model().objects.select_for_update().filter(pk=conversation.owner_id).first()
    Run.objects.select_for_update().filter(pk=run.pk).first()
    approval = Approval.objects.select_for_update().filter(run=run, call_id=call_id).first()
    if approval is None:
        raise AppError("not_found", APPROVAL_NOT_FOUND)
    if approval.status != Approval.Status.PENDING:
        raise AppError("already_decided", f"This tool call was already {approval.status}.")
    approval.status = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    approval.reason = reason
    approval.decided_by = user
    approval.decided_at = timezone.now()
    approval.save()
    if run.approvals.pending().exists():
        return Decision(approval=approval, resumed=False)
    allowance = admit(conversation=conversation, resuming=run)
    return Decision(approval=approval, resumed=_claim_paused(run=run), allowance=allowance)


def _claim_paused(*, run: Run) -> bool:
    """Compare-and-set a paused run to running: exactly one process resumes it. Its reply
    streams again (so heartbeats save its text and a crash marks it truthfully) and it reserves
    tokens again like any run in flight."""
    won = Run.objects.filter(pk=run.pk, status=Run.Status.AWAITING_APPROVAL).update(
        status=Run.Status.RUNNING, heartbeat_at=timezone.now(), cancel_requested=False
    )
    if won:
        Message.objects.filter(run=run, role=Message.Role.ASSISTANT, status=Message.Status.AWAITING_APPROVAL).update(
            status=Message.Status.STREAMING
        )
        conversation = Conversation.objects.only("owner_id", "agent_key").get(pk=run.conversation_id)
        usage_reserve(
            run_id=run.pk, user_id=conversation.owner_id, conversation_id=run.conversation_id,
            agent_key=conversation.agent_key, created_at=run.created_at,
        )
    return bool(won)


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
    settle_tools(reply.activity, status=ToolStatus(approval_status))
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
        if reply is not None:
            ended += 1
            _tell_tabs_run_ended(run.conversation, status=Run.Status.CANCELLED)
    return ended


def release_dead_runs(*, conversation: Conversation | None = None) -> int:
    """Free conversations held by runs that will never finish on their own."""
    return interrupt_stale_runs(conversation=conversation) + expire_approvals(conversation=conversation)


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
    usage_release(run_id=run.pk)
    reply = Message.objects.filter(run=run, role=Message.Role.ASSISTANT).first()
    partial = reply.content if reply else ""
    if reply and reply.status in (Message.Status.STREAMING, Message.Status.AWAITING_APPROVAL):
        reply.status = Message.Status.FAILED
        reply.error = "The server stopped before this reply finished."
        if run.history_mark is not None:
            outputs = history.tool_outputs_after(run.conversation.session_id, mark=run.history_mark)
            settle_tools(reply.activity, status=ToolStatus.FAILED, outputs=outputs)
        reply.save(update_fields=["status", "error", "activity", "updated_at"])
    if run.history_mark is not None:
        history.close_turn_sync(
            run.conversation.session_id, mark=run.history_mark, ending=history.ending_for("interrupted", partial)
        )
    log.warning("run %s interrupted: heartbeat stale since %s", run.public_id, run.heartbeat_at)
    _tell_tabs_run_ended(run.conversation, status=Run.Status.INTERRUPTED)
    return 1


def _tell_tabs_run_ended(conversation: Conversation, *, status: str) -> None:
    """A run ended with no executor to say so (its process died, its approval expired): the
    owner's other tabs stop showing the conversation as running, once this commits."""
    activity.send_to_user_on_commit(
        conversation.owner_id, wire.conversation_activity(conversation, status=status, running=False)
    )
