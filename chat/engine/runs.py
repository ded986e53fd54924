"""The run service: the only place an agent run starts, for every transport.

`start_run` takes the conversation's lock and stores the user's message (see
`transitions.run_create`), then executes the run as a background task of this process. The run
does not belong to the socket that asked for it: closing the tab does not stop it, and its
reply is stored either way. Events go out through `RunStream` (numbered, buffered, fanned out
to the conversation's group), built by `chat.wire`. Stop reaches the run from any process:
directly when it runs here, else through a Redis pub/sub message, and through the database
flag checked on every heartbeat as a fallback. A run that needs a tool approval parks its
serialised state in the database and ends its task; whichever process receives the decision
resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from agents import Agent, RunConfig, RunContextWrapper, Runner, RunState
from agents.exceptions import InputGuardrailTripwireTriggered, MaxTurnsExceeded, OutputGuardrailTripwireTriggered
from agents.run_error_handlers import RunErrorHandlerInput, RunErrorHandlerResult
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import BaseModel

from agents_app import context_window, history, progress, providers
from agents_app.context import ChatContext
from agents_app.errors import user_safe_message
from agents_app.guardrails import STREAM_RULES, StreamGuard, StreamTripped
from agents_app.registry import AgentSpec, get_spec
from agents_app.session import DjangoSession
from chat import activity, services, wire
from chat.engine import transitions
from chat.engine.metering import BudgetSpent, CallMeter
from chat.engine.process import engine
from chat.engine.streams import RunStream, send_to_conversation
from chat.models import Approval, Conversation, Message, Run
from chat.transcript import StreamEventMapper, ToolStatus, Transcript, field_of, parse_arguments
from config import metrics
from config.errors import AppError
from config.logging import bind_request_id
from usage.tokens import counts_from_sdk

log = logging.getLogger(__name__)

SHUTDOWN_ERROR = "The server restarted before this reply finished. Send your message again."


async def start_run(
    *, user, conversation: Conversation, content: str, request_id: str = "", model: str | None = None
) -> transitions.StartedRun:
    """Store the message and start the run; with `model` (a key users may pick,
    `providers.pickable`), the conversation runs on it from this turn on. Refuses with an
    `AppError` before anything is stored, as `transitions.admit` decides: `busy`/
    `approval_pending`, `too_many_runs`, `quota_exceeded`, `provider_not_configured`,
    `shutting_down`, `unknown_agent`."""
    # `database_sync_to_async`: the connection goes back to the pool right after (a request
    # that streams the run must not hold one for its whole life).
    started = await database_sync_to_async(transitions.run_create)(
        conversation=conversation, content=content, request_id=request_id, model_key=model
    )
    _launch(RunExecutor(started.run, reply=started.reply, user=user, conversation=conversation, started=started))
    return started


async def replace_last_turn(
    *,
    user,
    conversation: Conversation,
    request_id: str = "",
    edited_message_id=None,
    content: str | None = None,
    model: str | None = None,
) -> transitions.StartedRun:
    """Regenerate the last reply, or answer an edited last question, as a new run (on `model`
    when given, as `start_run`). Refuses like `start_run`, and with `not_editable` when there
    is no such last turn."""
    started = await database_sync_to_async(transitions.run_create_replacing_last_turn)(
        conversation=conversation, request_id=request_id, edited_message_id=edited_message_id, content=content,
        model_key=model,
    )
    _launch(RunExecutor(started.run, reply=started.reply, user=user, conversation=conversation, started=started))
    return started


def _launch(executor: RunExecutor) -> None:
    engine.launch(executor, executor.execute())


async def stop_run(*, conversation: Conversation) -> Run:
    """Ask the conversation's active run to stop, wherever it executes. Refuses with
    `not_running` when nothing runs."""
    run = await Run.objects.active_in(conversation).afirst()
    if run is None:
        raise AppError("not_running", "Nothing is running in this conversation.")
    if run.status == Run.Status.AWAITING_APPROVAL:
        # Nothing executes a parked run: end it right here.
        reply = await sync_to_async(transitions.end_paused_run)(
            run=run, status=Run.Status.CANCELLED, error="", approval_status=Approval.Status.REJECTED
        )
        if reply is not None:
            await publish_end_of_parked_run(run, reply, conversation=conversation, status=Run.Status.CANCELLED)
        return run
    await sync_to_async(transitions.run_request_cancel)(run=run)
    executor = engine.executor(str(run.public_id))
    if executor is not None:
        executor.request_stop()
    else:
        await engine.control.send_stop(str(run.public_id))
    return run


async def decide_approval(*, user, conversation: Conversation, call_id: str, approve: bool, reason: str = "") -> Approval:
    """Approve or reject a pending tool call; when it was the last one pending, resume the run
    in this process (whichever process that is). Refuses with `not_found`, `already_decided`,
    or, for the decision that would resume the run, whatever `transitions.admit` refuses
    (`too_many_runs`, `quota_exceeded`, `unknown_agent`, …): then that decision is not recorded
    and can be made again."""
    services.agent_for(user=user, agent_key=conversation.agent_key)
    await sync_to_async(transitions.expire_approvals)(conversation=conversation)
    run = await Run.objects.filter(conversation=conversation, approvals__call_id=call_id).order_by("-created_at").afirst()
    if run is None:
        raise AppError("not_found", transitions.APPROVAL_NOT_FOUND)
    decision = await sync_to_async(transitions.approval_decide)(
        run=run, call_id=call_id, approve=approve, reason=reason, user=user
    )
    # Every open tab hears of the decision at once; the resumed run's own events follow.
    await send_to_conversation(
        conversation.group_name,
        [wire.approval_decided(conversation=conversation, run=run, call_id=call_id, approved=approve, reason=reason)],
    )
    if decision.resumed:
        await run.arefresh_from_db()
        reply = await Message.objects.aget(run=run, role=Message.Role.ASSISTANT)
        _launch(RunExecutor(run, reply=reply, user=user, conversation=conversation, resume=True, allowance=decision.allowance))
    return decision.approval


async def delete_conversation(*, conversation: Conversation) -> None:
    """Delete a conversation with its messages, runs and SDK history. A run in flight (on any
    process) or waiting for an approval is stopped first and its end stored: its usage is
    recorded and its reservation released, and nothing of it is written after the delete."""
    run = await Run.objects.active_in(conversation).afirst()
    if run is not None:
        with contextlib.suppress(AppError):  # it ended meanwhile
            await stop_run(conversation=conversation)
        await _until_ended(run, conversation=conversation)
    await sync_to_async(services.conversation_delete)(conversation=conversation)


async def _until_ended(run: Run, *, conversation: Conversation) -> None:
    """Wait until a stopped run has stored its end: at once when it executes here; else its
    process stops it (pub/sub, or its next heartbeat), or it is found dead."""
    executor = engine.executor(str(run.public_id))
    if executor is not None and executor.task is not None:
        await asyncio.wait({asyncio.shield(executor.task)}, timeout=settings.RUN_STALE_AFTER_SECONDS)
        return
    deadline = time.monotonic() + settings.RUN_STALE_AFTER_SECONDS + settings.RUN_HEARTBEAT_SECONDS
    while time.monotonic() < deadline:
        await sync_to_async(transitions.release_dead_runs)(conversation=conversation)
        if not await Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE_STATUSES).aexists():
            return
        await asyncio.sleep(0.1)


async def wait_for_run(run_id: str) -> None:
    """Wait until a run executing in this process has stored its outcome (tests, SSE)."""
    executor = engine.executor(run_id)
    if executor is not None and executor.task is not None:
        await asyncio.shield(executor.task)


def active_executor(run_id: str) -> RunExecutor | None:
    return engine.executor(run_id)


async def publish_end_of_parked_run(run: Run, reply: Message, *, conversation: Conversation, status: str) -> None:
    """End a parked run's stream from whichever process ended it (Stop, expiry): its numbering
    continues after what the run published before it paused."""
    events = wire.end_of_run(reply, status=status, error=reply.error)
    last_seq = await sync_to_async(transitions.run_reserve_seq)(run=run, count=len(wire.END_OF_RUN_EVENTS))
    stream = RunStream(
        conversation_id=str(conversation.public_id), run_id=str(run.public_id), group=conversation.group_name,
        last_seq=last_seq, buffer=engine.buffer,
    )
    for event in events:
        await stream.publish(event)
    await stream.close()
    await activity.conversation_changed(conversation)  # the owner's other tabs: no longer running


@dataclass
class Ending:
    """How a run ended, as the steps below decide it."""

    status: str = Run.Status.COMPLETED
    error: str = ""
    structured: dict | None = None
    paused: bool = False


class RunExecutor:
    """Executes one run (or resumes one after its approvals) and stores its outcome."""

    def __init__(
        self,
        run: Run,
        *,
        reply: Message,
        user,
        conversation: Conversation,
        started: transitions.StartedRun | None = None,
        resume: bool = False,
        allowance: int | None = None,
    ) -> None:
        self.run = run
        # Tokens of the owner's budget the run may use (None: unlimited), from its admission.
        self.allowance = started.allowance if started is not None else allowance
        self.reply = reply
        self.started = started
        self.user = user
        self.conversation = conversation
        self.resume = resume
        self.run_id = str(run.public_id)
        self.task: asyncio.Task | None = None
        self.result = None
        self.stop_requested = False
        self.shutting_down = False
        self.max_turns_hit = False
        self.hold_text = False
        self.guard: StreamGuard | None = None
        self.model_label = ""
        self.transcript: Transcript | None = None  # set while the agent runs (heartbeats read it)
        self.meter: CallMeter | None = None
        self.unbilled: dict[str, int] | None = None
        self._beaten: tuple = ()
        self.events: list[dict[str, Any]] = list(run.events) if resume else []
        self.stream = RunStream(
            conversation_id=str(conversation.public_id),
            run_id=self.run_id,
            group=conversation.group_name,
            last_seq=run.last_seq,
            buffer=engine.buffer,
        )

    def request_stop(self) -> None:
        self.stop_requested = True
        if self.result is not None:
            self.result.cancel("immediate")

    def interrupt_for_shutdown(self) -> None:
        """Stop now, and say the truth: the server went away, the user did not stop it."""
        self.shutting_down = True
        self.request_stop()

    async def execute(self) -> None:
        # The task runs in a fresh context: bind the request id again for run and tool logs.
        bind_request_id(self.run.request_id)
        try:
            # The owner's other tabs: running (queued until it is marked running).
            await activity.conversation_changed(self.conversation, active_status=self.run.status)
            await self._execute()
        except Exception:
            log.exception("run %s crashed outside the agent loop", self.run_id)
            await self._finish(
                transitions.RunOutcome(
                    status=Run.Status.FAILED,
                    content="",
                    agent_name=self.conversation.current_agent_name,
                    error="Something went wrong while generating the reply. Please try again.",
                )
            )
        finally:
            engine.ended(self)

    async def publish(self, event: dict[str, Any]) -> None:
        published = await self.stream.publish(event)
        if event["type"] != "message.delta":
            self.events.append(published)

    # --- the run, step by step ---------------------------------------------------
    async def _execute(self) -> None:
        spec = get_spec(self.conversation.agent_key)
        session = DjangoSession(self.conversation.session_id)
        agent, transcript, mark = await self._prepare(spec)
        # Not streamed live: text an output guardrail must check first, and structured outputs
        # (JSON that is shown as a card once complete).
        self.hold_text = _holds_text(spec)
        await engine.control.watch(self.run_id, self.request_stop)  # a stop asked for in another process
        self.transcript = transcript
        try:
            ending = await self._run_agent(spec, agent, session, transcript)
        finally:
            self.transcript = None  # no more beats: the outcome is stored next
            await engine.control.unwatch(self.run_id)
            await self._settle_sdk()
        if self.meter is not None:  # a model call cut short is billed all the same
            self.unbilled = await self.meter.unbilled()
        if ending.paused:
            await self._pause(transcript)
            return
        if self.shutting_down and ending.status == Run.Status.CANCELLED:
            ending = Ending(status=Run.Status.INTERRUPTED, error=SHUTDOWN_ERROR)
        await self._repair_history(session, ending=ending, mark=mark, partial=transcript.content)
        if ending.status not in (Run.Status.COMPLETED, Run.Status.BLOCKED):
            # What the output guardrails never passed stays unseen: the reply keeps what was shown.
            transcript.text_parts[:] = [self.visible_text(transcript)]
        transcript.settle_activity(ToolStatus.CANCELLED if ending.status == Run.Status.CANCELLED else ToolStatus.FAILED)
        await self._finish(self._outcome(transcript, ending))

    async def _prepare(self, spec: AgentSpec) -> tuple[Agent, Transcript, int]:
        """The agent that answers, what the reply holds so far, and the history mark to roll
        back to (the run is marked running with it). A new run is announced; a resumed one
        continues its reply."""
        if self.resume:
            agent = spec.agent_named(self.run.agent_name)
            transcript = Transcript(
                agent=self.reply.agent_name or agent.name, text_parts=[self.reply.content], activity=self.reply.activity
            )
            mark = self.run.history_mark or 0
            await sync_to_async(transitions.run_mark_running)(run=self.run, history_mark=mark)
            return agent, transcript, mark
        agent = spec.agent_named(self.conversation.current_agent_name)
        await self._announce(agent.name)
        mark = await sync_to_async(transitions.run_mark_running)(run=self.run)
        return agent, Transcript(agent=agent.name), mark

    async def _run_agent(self, spec: AgentSpec, agent: Agent, session: DjangoSession, transcript: Transcript) -> Ending:
        """Stream the SDK run to the clients; how it ended (never raises for a run's failure)."""
        try:
            model_key = self.conversation.model_in_use
            resolved = providers.model_for_run(model_key)
            self.model_label = resolved.label
            context = ChatContext(
                user=self.user, conversation=self.conversation, request_id=self.run.request_id, model_key=model_key
            )
            if not self.hold_text:
                self.guard = StreamGuard.for_agents(spec.agents(), RunContextWrapper(context=context))
            run_input = await self._restore(agent, context) if self.resume else self.started.user_message.content
            with progress.reporting_to(self._report_progress):
                self.result = Runner.run_streamed(
                    agent,
                    run_input,
                    context=context,
                    session=session,
                    max_turns=spec.max_turns,
                    run_config=self._run_config(spec, resolved),
                    error_handlers=self._error_handlers(spec, transcript),
                )
                if self.stop_requested:
                    self.result.cancel("immediate")
                await self._stream(StreamEventMapper(agent=transcript.agent, text_so_far=bool(transcript.content)), transcript)
            await self._settle_sdk()
            return self._ending_of_result(transcript)
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered, StreamTripped) as exc:
            if isinstance(exc, StreamTripped):  # caught while streaming: stop the model at once
                self.result.cancel("immediate")
                await self._settle_sdk()
                name, message = exc.guardrail, exc.message
            else:
                name, message = _guardrail_verdict(exc)
            transcript.text_parts[:] = [message]
            await self.publish(wire.guardrail_tripped(guardrail=name, message=message))
            return Ending(status=Run.Status.BLOCKED, error=f"Blocked by the {name} guardrail.")
        except BudgetSpent as exc:  # the next model call would pass the user's budget
            return Ending(status=Run.Status.FAILED, error=exc.message)
        except Exception as exc:
            log.warning("run %s failed: %r", self.run_id, exc, exc_info=not isinstance(exc, providers.ProviderNotConfigured))
            if self.stop_requested:
                return Ending(status=Run.Status.CANCELLED)
            return Ending(status=Run.Status.FAILED, error=user_safe_message(exc))

    async def _stream(self, mapper: StreamEventMapper, transcript: Transcript) -> None:
        """Publish the run's events as they come. Text goes through the stream guard when the
        agents' output guardrails can judge it as it streams (it may hold a little back), and
        is held until the end when they cannot (or the output is structured)."""
        announced_hold = False
        async for event in self.result.stream_events():
            for event_out in mapper.map(event):
                transcript.apply(event_out)
                if event_out["type"] == "message.delta":
                    if self.hold_text:
                        if not announced_hold:
                            announced_hold = True
                            await self.publish(wire.run_progress("checking"))
                        continue
                    if self.guard is not None:
                        if shown := await self.guard.feed(event_out["delta"]):
                            await self.publish(wire.message_delta(shown))
                        continue
                await self.publish(event_out)
        # The SDK's own output guardrails passed the complete reply: show what was held back.
        if self.guard is not None and (rest := self.guard.rest()):
            await self.publish(wire.message_delta(rest))

    def visible_text(self, transcript: Transcript) -> str:
        """What the user has been shown of the reply so far (all of it, unless a guard holds
        some back or the text is held until the end)."""
        if self.hold_text:
            return ""
        if self.guard is not None:
            return self.guard.text[: self.guard.shown]
        return transcript.content

    def _ending_of_result(self, transcript: Transcript) -> Ending:
        if self.result.interruptions and not self.stop_requested:
            return Ending(status=Run.Status.AWAITING_APPROVAL, paused=True)
        if self.stop_requested and self.result.final_output is None:
            return Ending(status=Run.Status.CANCELLED)
        if self.max_turns_hit:
            return Ending(status=Run.Status.FAILED, error=user_safe_message(MaxTurnsExceeded("")))
        structured = _structured(self.result.final_output)
        if structured is not None:
            transcript.text_parts[:] = []  # the card says it; the JSON text would not
        return Ending(structured=structured)

    async def _announce(self, agent_name: str) -> None:
        started = self.started
        if started.replaced_message_ids:
            await self.publish(wire.conversation_truncated(started.replaced_message_ids))
        await self.publish(wire.message_created(started.user_message, request_id=self.run.request_id))
        await self.publish(wire.run_started(self.reply, agent=agent_name, request_id=self.run.request_id))

    async def _restore(self, agent: Agent, context: ChatContext) -> RunState:
        """The paused run's state, with the users' decisions applied."""
        state = await RunState.from_string(agent, self.run.state, context_override=context)
        decisions = {a.call_id: a async for a in Approval.objects.filter(run=self.run)}
        for item in state.get_interruptions():
            call_id = field_of(item.raw_item, "call_id")
            decision = decisions.get(call_id)
            approved = decision is not None and decision.status == Approval.Status.APPROVED
            if approved:
                state.approve(item)
            else:
                reason = decision.reason if decision and decision.reason else "The user declined this action."
                state.reject(item, rejection_message=f"Not approved by the user: {reason}")
            await self.publish(wire.approval_resolved(call_id=call_id or "", status="completed" if approved else "rejected"))
        return state

    async def _pause(self, transcript: Transcript) -> None:
        approvals = [
            {
                "call_id": field_of(item.raw_item, "call_id"),
                "name": field_of(item.raw_item, "name"),
                "arguments": parse_arguments(field_of(item.raw_item, "arguments")) or {},
                "agent": item.agent.name,
            }
            for item in self.result.interruptions
        ]
        waiting = {approval["call_id"] for approval in approvals}
        for entry in transcript.activity:
            if entry.get("call_id") in waiting:
                entry["status"] = ToolStatus.AWAITING_APPROVAL
        state = self.result.to_state().to_string(context_serializer=_context_reference)
        events = [wire.approval_requested(**approval) for approval in approvals]
        events.append(wire.run_paused(Run.Status.AWAITING_APPROVAL))
        outcome = self._outcome(transcript, Ending(status=Run.Status.AWAITING_APPROVAL))
        await self.stream.flush()
        # The seq of the events announced below is reserved now, so a process that resumes
        # this run continues after them.
        outcome.last_seq = self.stream.seq + len(events)
        outcome.events = self.events + events
        await sync_to_async(transitions.run_pause)(run=self.run, state=state, approvals=approvals, outcome=outcome)
        for event in events:
            await self.stream.publish(event)
        await self.stream.close()
        await activity.conversation_changed(self.conversation, active_status=Run.Status.AWAITING_APPROVAL)

    def _outcome(self, transcript: Transcript, ending: Ending) -> transitions.RunOutcome:
        usage = counts_from_sdk(self.result.context_wrapper.usage) if self.result is not None else {}
        if self.unbilled:
            usage = {name: usage.get(name, 0) + self.unbilled.get(name, 0) for name in {*usage, *self.unbilled}}
        return transitions.RunOutcome(
            status=ending.status,
            content=transcript.content,
            agent_name=transcript.agent,
            error=ending.error,
            activity=transcript.activity,
            structured=ending.structured,
            model=self.model_label,
            usage=usage,
            usage_estimated=bool(self.unbilled),
            time_to_first_token_ms=transcript.time_to_first_token_ms,
            duration_ms=transcript.duration_ms,
        )

    def _run_config(self, spec: AgentSpec, resolved: providers.ResolvedModel) -> RunConfig:
        # Every model call gets at most the agent's input-token budget of the conversation, and
        # the session reads only that much of it (in this run's own context).
        window = context_window.window_for(spec, resolved)
        context_window.use_for_history(window)
        transcript = self.transcript
        self.meter = CallMeter(
            window,
            allowance=self.allowance,
            spent=lambda: self.result.context_wrapper.usage if self.result is not None else None,
            text=lambda: transcript.content if transcript is not None else "",
        )
        config = RunConfig(
            model=resolved.model,
            call_model_input_filter=self.meter,
            workflow_name=spec.workflow_name or f"chat.{spec.key}",
            group_id=str(self.conversation.public_id),
            trace_metadata={
                "user_id": str(self.user.pk),
                "agent": spec.key,
                "run_id": self.run_id,
                "conversation_id": str(self.conversation.public_id),
            },
            trace_include_sensitive_data=settings.AGENTS_TRACE_SENSITIVE_DATA,
        )
        # Set after construction: given to the constructor, a ModelSettings (which needs no
        # coercion) still costs a `get_type_hints(RunConfig)`, about 1 ms of CPU per run.
        config.model_settings = resolved.settings
        return config

    def _error_handlers(self, spec: AgentSpec, transcript: Transcript) -> dict:
        # A structured-output agent cannot end with a plain sentence: there MaxTurnsExceeded
        # ends the run as failed and the turn is closed like any failure.
        if any(not _plain_text(candidate) for candidate in spec.agents()):
            return {}

        async def on_max_turns(data: RunErrorHandlerInput) -> RunErrorHandlerResult:
            self.max_turns_hit = True
            message = user_safe_message(data.error)
            if not self.hold_text:  # held text is dropped on failure; the error says it then
                event = wire.message_delta(f"\n\n{message}" if transcript.content else message)
                transcript.apply(event)
                await self.publish(event)
            # Stored as the assistant's last message, so the history ends as a valid turn.
            return RunErrorHandlerResult(final_output=message, include_in_history=True)

        return {"max_turns": on_max_turns}

    async def _settle_sdk(self) -> None:
        """Wait until the SDK's own loop has finished its session writes, so the history we
        inspect or repair next is final."""
        task = getattr(self.result, "run_loop_task", None)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=30)

    async def _repair_history(self, session: DjangoSession, *, ending: Ending, mark: int, partial: str) -> None:
        if ending.status == Run.Status.BLOCKED:
            # A blocked request must not come back as input next turn: drop the whole turn.
            await session.truncate_after(mark)
        elif ending.status in (Run.Status.CANCELLED, Run.Status.FAILED, Run.Status.INTERRUPTED):
            await history.close_turn(
                session.session_id, mark=mark, ending=history.ending_for(ending.status, partial, ending.error)
            )

    async def _finish(self, outcome: transitions.RunOutcome) -> None:
        await self.stream.flush()
        closing = wire.run_finished(status=outcome.status, error=outcome.error)
        outcome.events = [*self.events, closing]
        # The seq of the end-of-run events, reserved before they are published.
        outcome.last_seq = self.stream.seq + len(wire.END_OF_RUN_EVENTS)
        reply = await sync_to_async(transitions.run_finish)(run=self.run, outcome=outcome)
        _observe(outcome)
        status, error = outcome.status, outcome.error
        if reply.status != transitions.MESSAGE_STATUS_FOR_RUN[status]:
            # Another process declared this run dead meanwhile: followers hear what is stored.
            status, error = Run.Status.INTERRUPTED, reply.error
        # Published only after the commit above: nobody hears of a reply that is not stored.
        for event in wire.end_of_run(reply, status=status, error=error):
            await self.stream.publish(event)
        await self.stream.close()
        await activity.conversation_changed(self.conversation)  # the owner's other tabs: ended

    # --- companions ---------------------------------------------------------------
    def beat(self) -> transitions.Beat:
        """What the next heartbeat saves of this run: its partial reply only when it changed."""
        if self.transcript is None:  # not streaming (yet, or any more): alive, nothing to save
            return transitions.Beat(run_id=self.run.pk)
        text, activity = self.visible_text(self.transcript), self.transcript.activity
        shape = (len(text), len(activity), tuple(entry.get("status") for entry in activity))
        changed = shape != self._beaten
        self._beaten = shape
        return transitions.Beat(
            run_id=self.run.pk, content=text if changed else None, activity=list(activity) if changed else None
        )

    async def _report_progress(self, stage: str, data: dict[str, Any]) -> None:
        await self.publish(wire.run_progress(stage, **data))


def _observe(outcome: transitions.RunOutcome) -> None:
    metrics.runs_finished.labels(outcome.status).inc()
    if outcome.duration_ms is not None:
        metrics.run_duration.observe(outcome.duration_ms / 1000)
    if outcome.time_to_first_token_ms is not None:
        metrics.time_to_first_token.observe(outcome.time_to_first_token_ms / 1000)
    usage = outcome.usage or {}
    model = outcome.model or "unknown"
    metrics.tokens.labels(model, "input").inc(usage.get("input_tokens", 0))
    metrics.tokens.labels(model, "output").inc(usage.get("output_tokens", 0))


def _context_reference(context: Any) -> dict[str, Any]:
    # The stored state names the user and conversation; on resume they are loaded again from
    # the database (never trusted from the payload).
    return {"user_id": getattr(context.user, "pk", None), "conversation_id": str(context.conversation.public_id)}


def _holds_text(spec: AgentSpec) -> bool:
    """Whether replies must be held until complete: a structured output (shown as a card), or
    an output guardrail that cannot judge text as it streams (`guardrails.STREAM_RULES`)."""
    agents = list(spec.agents())
    names = {guardrail.get_name() for agent in agents for guardrail in agent.output_guardrails}
    return any(not _plain_text(agent) for agent in agents) or not names <= set(STREAM_RULES)


def _plain_text(agent: Agent) -> bool:
    return agent.output_type is None or agent.output_type is str


def _structured(final_output: Any) -> dict | None:
    if isinstance(final_output, BaseModel):
        return {"type": type(final_output).__name__, "data": final_output.model_dump(mode="json")}
    return None


def _guardrail_verdict(exc: InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered) -> tuple[str, str]:
    result = exc.guardrail_result
    name = result.guardrail.get_name()
    info = result.output.output_info
    message = info.get("message") if isinstance(info, dict) else getattr(info, "message", None)
    if not isinstance(message, str) or not message:
        message = info if isinstance(info, str) and info else "This request was blocked by a safety check."
    return name, message
