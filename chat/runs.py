"""The run service: the only place an agent run starts, for every transport.

`start_run` takes the conversation's lock and stores the user's message (see
`services.run_create`), then executes the run as a background task of this process. The run
does not belong to the socket that asked for it: closing the tab does not stop it, and its
reply is stored either way. Events go out through `RunStream` (numbered, buffered, fanned out
to the conversation's group). Stop reaches the run from any process: directly when it runs
here, else through a Redis pub/sub message, and through the database flag checked on every
heartbeat as a fallback. A run that needs a tool approval parks its serialised state in the
database and ends its task; whichever process receives the decision resumes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any

from agents import RunConfig, Runner, RunState
from agents.exceptions import InputGuardrailTripwireTriggered, MaxTurnsExceeded, OutputGuardrailTripwireTriggered
from agents.run_error_handlers import RunErrorHandlerInput, RunErrorHandlerResult
from asgiref.sync import sync_to_async
from django.conf import settings
from pydantic import BaseModel

from agents_app import history, progress, providers
from agents_app.context import ChatContext
from agents_app.errors import user_safe_message
from agents_app.events import StreamEventMapper, Transcript
from agents_app.registry import AgentSpec, get_spec
from agents_app.session import DjangoSession
from agents_app.usage import usage_summary
from chat import quotas, services
from chat.models import Approval, Conversation, Message, Run
from chat.rendering import render_card, render_markdown
from chat.streams import RunStream, event_buffer, send_to_conversation
from config.logging import bind_request_id

log = logging.getLogger(__name__)

# Executors of the runs this process is executing, by run public id.
_executors: dict[str, RunExecutor] = {}


async def start_run(*, user, conversation: Conversation, content: str, request_id: str = "") -> services.StartedRun:
    """Store the message and start the run. Raises `services.ConversationBusy`, or
    `quotas.QuotaExceeded` before anything is stored when the user is over today's budget."""
    await sync_to_async(quotas.check_quota)(user=user)
    started = await sync_to_async(services.run_create)(conversation=conversation, content=content, request_id=request_id)
    _launch(RunExecutor(started.run, reply=started.reply, user=user, conversation=conversation, started=started))
    return started


async def replace_last_turn(
    *, user, conversation: Conversation, request_id: str = "", edited_message_id=None, content: str | None = None
) -> services.StartedRun:
    """Regenerate the last reply, or answer an edited last question, as a new run.
    Raises `services.ConversationBusy`, `services.NothingToReplace` or `quotas.QuotaExceeded`."""
    await sync_to_async(quotas.check_quota)(user=user)
    started = await sync_to_async(services.run_create_replacing_last_turn)(
        conversation=conversation, request_id=request_id, edited_message_id=edited_message_id, content=content
    )
    _launch(RunExecutor(started.run, reply=started.reply, user=user, conversation=conversation, started=started))
    return started


def _launch(executor: RunExecutor) -> None:
    _executors[executor.run_id] = executor
    # A fresh context: the run outlives the request or socket that started it, and must not
    # inherit its per-request ORM thread (asgiref's ThreadSensitiveContext), which ends with it.
    executor.task = asyncio.create_task(
        executor.execute(), name=f"agent-run-{executor.run_id}", context=contextvars.Context()
    )


async def stop_run(*, conversation: Conversation) -> Run | None:
    """Ask the conversation's active run to stop, wherever it executes."""
    run = await Run.objects.active().filter(conversation=conversation).afirst()
    if run is None:
        return None
    if run.status == Run.Status.AWAITING_APPROVAL:
        # Nothing executes a parked run: end it right here.
        reply = await sync_to_async(services.end_paused_run)(
            run=run, status=Run.Status.CANCELLED, error="", approval_status=Approval.Status.REJECTED
        )
        if reply is not None:
            await _publish_end(run, reply, conversation=conversation, status=Run.Status.CANCELLED, error="")
        return run
    await sync_to_async(services.run_request_cancel)(run=run)
    executor = _executors.get(str(run.public_id))
    if executor is not None:
        executor.request_stop()
    else:
        await event_buffer().send_stop(str(run.public_id))
    return run


class ApprovalError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def decide_approval(*, user, conversation: Conversation, call_id: str, approve: bool, reason: str = "") -> Approval:
    """Approve or reject a pending tool call; when it was the last one pending, resume the run
    in this process (whichever process that is)."""
    await sync_to_async(services.expire_approvals)(conversation=conversation)
    run = await Run.objects.filter(conversation=conversation, approvals__call_id=call_id).order_by("-created_at").afirst()
    if run is None:
        raise ApprovalError("not_found", "No such tool call is waiting for approval.")
    try:
        approval, all_decided = await sync_to_async(services.approval_decide)(
            run=run, call_id=call_id, approve=approve, reason=reason, user=user
        )
    except services.ApprovalNotFound:
        raise ApprovalError("not_found", "No such tool call is waiting for approval.") from None
    except services.ApprovalAlreadyDecided as exc:
        raise ApprovalError("already_decided", str(exc)) from None
    # Every open tab hears of the decision at once; the resumed run's own events follow.
    await send_to_conversation(
        conversation.group_name,
        {
            "type": "approval.decided",
            "conversation": str(conversation.public_id),
            "run": str(run.public_id),
            "call_id": call_id,
            "approved": approve,
            "reason": reason,
        },
    )
    if all_decided and await sync_to_async(services.run_claim_paused)(run=run):
        await run.arefresh_from_db()
        reply = await Message.objects.aget(run=run, role=Message.Role.ASSISTANT)
        _launch(RunExecutor(run, reply=reply, user=user, conversation=conversation, resume=True))
    return approval


async def wait_for_run(run_id: str) -> None:
    """Wait until a run executing in this process has stored its outcome (tests, SSE)."""
    executor = _executors.get(str(run_id))
    if executor is not None and executor.task is not None:
        await asyncio.shield(executor.task)


def active_executor(run_id: str) -> RunExecutor | None:
    return _executors.get(str(run_id))


class RunExecutor:
    def __init__(
        self,
        run: Run,
        *,
        reply: Message,
        user,
        conversation: Conversation,
        started: services.StartedRun | None = None,
        resume: bool = False,
    ) -> None:
        self.run = run
        self.reply = reply
        self.started = started
        self.user = user
        self.conversation = conversation
        self.resume = resume
        self.run_id = str(run.public_id)
        self.task: asyncio.Task | None = None
        self.result = None
        self.stop_requested = False
        self.max_turns_hit = False
        self.hold_text = False
        self.events: list[dict[str, Any]] = list(run.events) if resume else []
        self.stream = RunStream(
            conversation_id=str(conversation.public_id),
            run_id=self.run_id,
            group=conversation.group_name,
            last_seq=run.last_seq,
        )

    def request_stop(self) -> None:
        self.stop_requested = True
        if self.result is not None:
            self.result.cancel("immediate")

    async def execute(self) -> None:
        # The task runs in a fresh context: bind the request id again for run and tool logs.
        bind_request_id(self.run.request_id)
        try:
            await self._execute()
        except Exception:
            log.exception("run %s crashed outside the agent loop", self.run_id)
            await self._finish(
                services.RunOutcome(
                    status=Run.Status.FAILED,
                    content="",
                    agent_name=self.conversation.current_agent_name,
                    error="Something went wrong while generating the reply. Please try again.",
                )
            )
        finally:
            _executors.pop(self.run_id, None)

    async def publish(self, event: dict[str, Any]) -> None:
        published = await self.stream.publish(event)
        if event["type"] != "message.delta":
            self.events.append(published)

    # --- the run ---------------------------------------------------------------
    async def _execute(self) -> None:
        spec = get_spec(self.conversation.agent_key)
        session = DjangoSession(self.conversation.session_id)
        if self.resume:
            agent = spec.agent_named(self.run.agent_name)
            transcript = Transcript(
                agent=self.reply.agent_name or agent.name, text_parts=[self.reply.content], activity=self.reply.activity
            )
            mark = self.run.history_mark or 0
        else:
            agent = spec.agent_named(self.conversation.current_agent_name)
            transcript = Transcript(agent=agent.name)
            await self._announce(agent.name)
            mark = await session.last_item_id()
        mapper = StreamEventMapper(agent=transcript.agent, text_so_far=bool(transcript.content))
        # Not streamed live: text an output guardrail must check first, and structured outputs
        # (JSON that is shown as a card once complete).
        self.hold_text = hold_text = any(
            candidate.output_guardrails or not _plain_text(candidate) for candidate in spec.agents()
        )

        await sync_to_async(services.run_mark_running)(run=self.run, history_mark=mark)
        background = [asyncio.create_task(self._beat(transcript)), asyncio.create_task(self._listen())]

        status, error, structured, model_label = Run.Status.COMPLETED, "", None, ""
        try:
            resolved = providers.model_for_run()
            model_label = resolved.label
            context = ChatContext(user=self.user, conversation=self.conversation, request_id=self.run.request_id)
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
                announced_hold = False
                async for event in self.result.stream_events():
                    for wire in mapper.map(event):
                        transcript.apply(wire)
                        if hold_text and wire["type"] == "message.delta":
                            if not announced_hold:
                                announced_hold = True
                                await self.publish({"type": "run.progress", "stage": "checking"})
                            continue
                        await self.publish(wire)
            await self._settle_sdk()
            if self.result.interruptions and not self.stop_requested:
                await self._pause(transcript, model_label)
                return
            if self.stop_requested and self.result.final_output is None:
                status = Run.Status.CANCELLED
            elif self.max_turns_hit:
                status, error = Run.Status.FAILED, user_safe_message(MaxTurnsExceeded(""))
            else:
                structured = _structured(self.result.final_output)
                if structured is not None:
                    transcript.text_parts[:] = []  # the card says it; the JSON text would not
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered) as exc:
            status = Run.Status.BLOCKED
            name, message = _guardrail_verdict(exc)
            error = f"Blocked by the {name} guardrail."
            transcript.text_parts[:] = [message]
            await self.publish({"type": "guardrail.tripped", "guardrail": name, "message": message})
        except Exception as exc:
            status = Run.Status.CANCELLED if self.stop_requested else Run.Status.FAILED
            error = "" if self.stop_requested else user_safe_message(exc)
            log.warning("run %s failed: %r", self.run_id, exc, exc_info=not isinstance(exc, providers.ProviderNotConfigured))
        finally:
            for task in background:
                task.cancel()
            await self._settle_sdk()

        await self._repair_history(session, status=status, mark=mark, partial=transcript.content, error=error)
        if hold_text and status != Run.Status.COMPLETED and status != Run.Status.BLOCKED:
            # Never checked by the output guardrail: not shown (the SDK history keeps it).
            transcript.text_parts[:] = []
        transcript.settle_activity("cancelled" if status == Run.Status.CANCELLED else "failed")
        await self._finish(self._outcome(transcript, status=status, error=error, structured=structured, model=model_label))

    async def _announce(self, agent_name: str) -> None:
        started = self.started
        if started.replaced_message_ids:
            await self.publish({"type": "conversation.truncated", "messages": list(started.replaced_message_ids)})
        await self.publish({
            "type": "message.created",
            "message": str(started.user_message.public_id),
            "role": "user",
            "content": started.user_message.content,
            "request_id": self.run.request_id or None,
        })
        await self.publish({
            "type": "run.started",
            "message": str(self.reply.public_id),
            "agent": agent_name,
            "request_id": self.run.request_id or None,
        })

    async def _restore(self, agent, context: ChatContext) -> RunState:
        """The paused run's state, with the users' decisions applied."""
        state = await RunState.from_string(agent, self.run.state, context_override=context)
        decisions = {a.call_id: a async for a in Approval.objects.filter(run=self.run)}
        for item in state.get_interruptions():
            decision = decisions.get(getattr(item.raw_item, "call_id", None))
            if decision is not None and decision.status == Approval.Status.APPROVED:
                state.approve(item)
            else:
                reason = decision.reason if decision and decision.reason else "The user declined this action."
                state.reject(item, rejection_message=f"Not approved by the user: {reason}")
            transcript_status = "completed" if decision and decision.status == Approval.Status.APPROVED else "rejected"
            await self.publish({
                "type": "approval.resolved",
                "call_id": getattr(item.raw_item, "call_id", ""),
                "status": transcript_status,
            })
        return state

    async def _pause(self, transcript: Transcript, model_label: str) -> None:
        approvals = []
        for item in self.result.interruptions:
            raw = item.raw_item
            approvals.append({
                "call_id": getattr(raw, "call_id", None) or raw.get("call_id"),
                "name": getattr(raw, "name", None) or raw.get("name"),
                "arguments": _parse(getattr(raw, "arguments", None) or raw.get("arguments")),
                "agent": item.agent.name,
            })
        for entry in transcript.activity:
            if entry.get("call_id") in {a["call_id"] for a in approvals}:
                entry["status"] = "awaiting_approval"
        state = self.result.to_state().to_string(context_serializer=_context_reference)
        events = [{"type": "approval.requested", **approval} for approval in approvals]
        events.append({"type": "run.paused", "status": Run.Status.AWAITING_APPROVAL})
        outcome = self._outcome(transcript, status=Run.Status.AWAITING_APPROVAL, error="", structured=None, model=model_label)
        await self.stream.flush()
        # The seq of the events announced below is reserved now, so a process that resumes
        # this run continues after them.
        outcome.last_seq = self.stream.seq + len(events)
        outcome.events = self.events + events
        await sync_to_async(services.run_pause)(run=self.run, state=state, approvals=approvals, outcome=outcome)
        for event in events:
            await self.stream.publish(event)
        await self.stream.close()

    def _outcome(self, transcript: Transcript, *, status: str, error: str, structured, model: str) -> services.RunOutcome:
        usage = usage_summary(self.result.context_wrapper.usage) if self.result is not None else {}
        return services.RunOutcome(
            status=status,
            content=transcript.content,
            agent_name=transcript.agent,
            error=error,
            activity=transcript.activity,
            structured=structured,
            model=model,
            usage=usage,
            time_to_first_token_ms=transcript.time_to_first_token_ms,
            duration_ms=transcript.duration_ms,
        )

    def _run_config(self, spec: AgentSpec, resolved: providers.ResolvedModel) -> RunConfig:
        return RunConfig(
            model=resolved.model,
            model_settings=resolved.settings,
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

    def _error_handlers(self, spec: AgentSpec, transcript: Transcript) -> dict:
        # A structured-output agent cannot end with a plain sentence: there MaxTurnsExceeded
        # ends the run as failed and the turn is closed like any failure.
        if any(not _plain_text(candidate) for candidate in spec.agents()):
            return {}

        async def on_max_turns(data: RunErrorHandlerInput) -> RunErrorHandlerResult:
            self.max_turns_hit = True
            message = user_safe_message(data.error)
            if not self.hold_text:  # held text is dropped on failure; the error says it then
                wire = {"type": "message.delta", "delta": (f"\n\n{message}" if transcript.content else message)}
                transcript.apply(wire)
                await self.publish(wire)
            # Stored as the assistant's last message, so the history ends as a valid turn.
            return RunErrorHandlerResult(final_output=message, include_in_history=True)

        return {"max_turns": on_max_turns}

    async def _settle_sdk(self) -> None:
        """Wait until the SDK's own loop has finished its session writes, so the history we
        inspect or repair next is final."""
        task = getattr(self.result, "run_loop_task", None)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=30)

    async def _repair_history(self, session: DjangoSession, *, status: str, mark: int, partial: str, error: str) -> None:
        if status == Run.Status.BLOCKED:
            # A blocked request must not come back as input next turn: drop the whole turn.
            await session.truncate_after(mark)
        elif status in (Run.Status.CANCELLED, Run.Status.FAILED):
            await history.close_turn(session.session_id, mark=mark, ending=history.ending_for(status, partial, error))

    async def _finish(self, outcome: services.RunOutcome) -> None:
        await self.stream.flush()
        outcome.events = self.events + [{"type": "run.finished", "status": outcome.status, "error": outcome.error}]
        outcome.last_seq = self.stream.seq + 3  # the three events published below
        reply = await sync_to_async(services.run_finish)(run=self.run, outcome=outcome)
        # Published only after the commit above: nobody hears of a reply that is not stored.
        await _publish_end(
            self.run, reply, conversation=self.conversation, status=outcome.status, error=outcome.error, stream=self.stream
        )

    # --- background companions ------------------------------------------------
    async def _beat(self, transcript: Transcript) -> None:
        while True:
            await asyncio.sleep(settings.RUN_HEARTBEAT_SECONDS)
            try:
                cancel = await sync_to_async(services.run_heartbeat)(run=self.run, partial_content=transcript.content)
            except Exception:
                log.exception("heartbeat of run %s failed", self.run_id)
                continue
            if cancel and not self.stop_requested:
                self.request_stop()

    async def _listen(self) -> None:
        """A stop asked for in another process (see `stop_run`)."""
        await event_buffer().wait_for_stop(self.run_id)
        self.request_stop()

    async def _report_progress(self, stage: str, data: dict[str, Any]) -> None:
        await self.publish({"type": "run.progress", "stage": stage, **data})


async def _publish_end(
    run: Run, reply: Message, *, conversation: Conversation, status: str, error: str, stream: RunStream | None = None
) -> None:
    """The three events that end every run, whoever ends it."""
    if stream is None:
        # Ending a parked run from whichever process got the request: continue its numbering.
        await run.arefresh_from_db(fields=["last_seq"])
        stream = RunStream(
            conversation_id=str(conversation.public_id),
            run_id=str(run.public_id),
            group=conversation.group_name,
            last_seq=run.last_seq,
        )
        await Run.objects.filter(pk=run.pk).aupdate(last_seq=run.last_seq + 3)
    await stream.publish({
        "type": "message.completed",
        "message": str(reply.public_id),
        "status": reply.status,
        "agent": reply.agent_name,
        "content": reply.content,
        "html": render_markdown(reply.content),
        "structured": reply.structured,
        "card": render_card(reply.structured),
        "activity": reply.activity,
    })
    await stream.publish({"type": "usage", "message": str(reply.public_id), **message_usage(reply)})
    await stream.publish({"type": "run.finished", "status": status, "error": error})
    await stream.close()


def message_usage(message: Message) -> dict[str, Any]:
    return {
        "model": message.model,
        "requests": message.requests,
        "input_tokens": message.input_tokens,
        "cached_tokens": message.cached_tokens,
        "output_tokens": message.output_tokens,
        "reasoning_tokens": message.reasoning_tokens,
        "total_tokens": message.total_tokens,
        "cost": None if message.cost is None else str(message.cost),
        "time_to_first_token_ms": message.time_to_first_token_ms,
        "duration_ms": message.duration_ms,
    }


def _context_reference(context: Any) -> dict[str, Any]:
    # The stored state names the user and conversation; on resume they are loaded again from
    # the database (never trusted from the payload).
    return {"user_id": getattr(context.user, "pk", None), "conversation_id": str(context.conversation.public_id)}


def _plain_text(agent) -> bool:
    return agent.output_type is None or agent.output_type is str


def _parse(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments if arguments is not None else {}


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
