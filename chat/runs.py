"""The run service: the only place an agent run starts, for every transport.

`start_run` takes the conversation's lock and stores the user's message (see
`services.run_create`), then executes the run as a background task of this process. The run
does not belong to the socket that asked for it: closing the tab does not stop it, and its
reply is stored either way. Events go out through `RunStream` (numbered, buffered, fanned out
to the conversation's group). Stop reaches the run from any process: directly when it runs
here, else through its control channel, and through the database flag checked on every
heartbeat as a fallback.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from agents import RunConfig, Runner
from agents.exceptions import InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from pydantic import BaseModel

from agents_app import history, progress, providers
from agents_app.context import ChatContext
from agents_app.errors import user_safe_message
from agents_app.events import StreamEventMapper, Transcript
from agents_app.registry import AgentSpec, get_spec
from agents_app.session import DjangoSession
from agents_app.usage import usage_summary
from chat import services
from chat.models import Conversation, Message, Run
from chat.rendering import render_card, render_markdown
from chat.streams import RunStream

log = logging.getLogger(__name__)

# Executors of the runs this process is executing, by run public id.
_executors: dict[str, RunExecutor] = {}


async def start_run(*, user, conversation: Conversation, content: str, request_id: str = "") -> services.StartedRun:
    """Store the message and start the run. Raises `services.ConversationBusy`."""
    started = await sync_to_async(services.run_create)(conversation=conversation, content=content, request_id=request_id)
    executor = RunExecutor(started, user=user, conversation=conversation, content=content)
    _executors[executor.run_id] = executor
    # A fresh context: the run outlives the request or socket that started it, and must not
    # inherit its per-request ORM thread (asgiref's ThreadSensitiveContext), which ends with it.
    executor.task = asyncio.create_task(
        executor.execute(), name=f"agent-run-{executor.run_id}", context=contextvars.Context()
    )
    return started


async def stop_run(*, conversation: Conversation) -> Run | None:
    """Ask the conversation's active run to stop, wherever it executes."""
    run = await Run.objects.active().filter(conversation=conversation).afirst()
    if run is None:
        return None
    await sync_to_async(services.run_request_cancel)(run=run)
    executor = _executors.get(str(run.public_id))
    if executor is not None:
        executor.request_stop()
    elif run.control_channel:
        await get_channel_layer().send(run.control_channel, {"type": "run.stop", "run": str(run.public_id)})
    return run


async def wait_for_run(run_id: str) -> None:
    """Wait until a run executing in this process has stored its outcome (tests, SSE)."""
    executor = _executors.get(str(run_id))
    if executor is not None and executor.task is not None:
        await asyncio.shield(executor.task)


def active_executor(run_id: str) -> RunExecutor | None:
    return _executors.get(str(run_id))


class RunExecutor:
    def __init__(self, started: services.StartedRun, *, user, conversation: Conversation, content: str) -> None:
        self.run = started.run
        self.reply = started.reply
        self.user_message = started.user_message
        self.user = user
        self.conversation = conversation
        self.content = content
        self.run_id = str(self.run.public_id)
        self.task: asyncio.Task | None = None
        self.result = None
        self.stop_requested = False
        self.stream = RunStream(
            conversation_id=str(conversation.public_id), run_id=self.run_id, group=conversation.group_name
        )

    def request_stop(self) -> None:
        self.stop_requested = True
        if self.result is not None:
            self.result.cancel("immediate")

    async def execute(self) -> None:
        try:
            await self._execute()
        except Exception:
            log.exception("run %s crashed outside the agent loop", self.run_id)
            await self._finish(services.RunOutcome(
                status=Run.Status.FAILED,
                content="",
                agent_name=self.conversation.current_agent_name,
                error="Something went wrong while generating the reply. Please try again.",
            ), transcript=None)
        finally:
            _executors.pop(self.run_id, None)

    # --- the run ---------------------------------------------------------------
    async def _execute(self) -> None:
        spec = get_spec(self.conversation.agent_key)
        agent = spec.agent_named(self.conversation.current_agent_name)
        transcript = Transcript(agent=agent.name)
        mapper = StreamEventMapper(agent=agent.name)
        session = DjangoSession(self.conversation.session_id)

        await self.stream.publish({
            "type": "message.created",
            "message": str(self.user_message.public_id),
            "role": "user",
            "content": self.content,
            "request_id": self.run.request_id or None,
        })
        await self.stream.publish({
            "type": "run.started",
            "message": str(self.reply.public_id),
            "agent": agent.name,
            "request_id": self.run.request_id or None,
        })

        mark = await session.last_item_id()
        control_channel = await get_channel_layer().new_channel("run-control.")
        await sync_to_async(services.run_mark_running)(run=self.run, history_mark=mark, control_channel=control_channel)
        background = [
            asyncio.create_task(self._beat(transcript)),
            asyncio.create_task(self._listen(control_channel)),
        ]

        status, error, structured, model_label = Run.Status.COMPLETED, "", None, ""
        try:
            resolved = providers.model_for_run()
            model_label = resolved.label
            with progress.reporting_to(self._report_progress):
                self.result = Runner.run_streamed(
                    agent,
                    self.content,
                    context=ChatContext(user=self.user, conversation=self.conversation, request_id=self.run.request_id),
                    session=session,
                    max_turns=spec.max_turns,
                    run_config=self._run_config(spec, resolved),
                )
                if self.stop_requested:
                    self.result.cancel("immediate")
                async for event in self.result.stream_events():
                    for wire in mapper.map(event):
                        transcript.apply(wire)
                        await self.stream.publish(wire)
            await self._settle_sdk()
            if self.stop_requested and self.result.final_output is None:
                status = Run.Status.CANCELLED
            else:
                structured = _structured(self.result.final_output)
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered) as exc:
            status = Run.Status.BLOCKED
            name, message = _guardrail_verdict(exc)
            error = f"Blocked by the {name} guardrail."
            transcript.text_parts[:] = [message]
            await self.stream.publish({"type": "guardrail.tripped", "guardrail": name, "message": message})
        except Exception as exc:
            status = Run.Status.CANCELLED if self.stop_requested else Run.Status.FAILED
            error = "" if self.stop_requested else user_safe_message(exc)
            log.warning("run %s failed: %r", self.run_id, exc, exc_info=not isinstance(exc, providers.ProviderNotConfigured))
        finally:
            for task in background:
                task.cancel()
            await self._settle_sdk()

        await self._repair_history(session, status=status, mark=mark, partial=transcript.content, error=error)
        transcript.settle_activity("cancelled" if status == Run.Status.CANCELLED else "failed")
        usage = usage_summary(self.result.context_wrapper.usage) if self.result is not None else {}
        await self._finish(
            services.RunOutcome(
                status=status,
                content=transcript.content,
                agent_name=transcript.agent,
                error=error,
                activity=transcript.activity,
                structured=structured,
                model=model_label,
                usage=usage,
                time_to_first_token_ms=transcript.time_to_first_token_ms,
                duration_ms=transcript.duration_ms,
            ),
            transcript=transcript,
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

    async def _finish(self, outcome: services.RunOutcome, *, transcript: Transcript | None) -> None:
        reply = await sync_to_async(services.run_finish)(run=self.run, outcome=outcome)
        # Published only after the commit above: nobody hears of a reply that is not stored.
        await self.stream.publish({
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
        await self.stream.publish({"type": "usage", "message": str(reply.public_id), **message_usage(reply)})
        await self.stream.publish({"type": "run.finished", "status": outcome.status, "error": outcome.error})
        await self.stream.close()

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

    async def _listen(self, channel: str) -> None:
        layer = get_channel_layer()
        while True:
            message = await layer.receive(channel)
            if message.get("type") == "run.stop":
                self.request_stop()

    async def _report_progress(self, stage: str, data: dict[str, Any]) -> None:
        await self.stream.publish({"type": "run.progress", "stage": stage, **data})


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
