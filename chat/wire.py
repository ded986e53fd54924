"""The wire format: every event and JSON shape a client sees, on every transport.

The socket sends these dicts as JSON frames, the HTTP API as SSE messages and JSON bodies, the
terminal chat renders them; none of them builds an event of its own. Events of a run are
published through `chat.engine.streams.RunStream`, which adds `conversation`, `run` and `seq`; the
protocol is documented in docs/protocol.md.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chat.rendering import render_card, render_markdown
from config import metrics
from usage.models import TOKEN_FIELDS

if TYPE_CHECKING:
    from agents_app.registry import AgentSpec
    from chat.models import Approval, Conversation, Feedback, Message, Run
    from config.errors import AppError

# A follower stops after one of these: the run ended, or it waits for a tool approval.
# The channel-layer message carrying a batch of events to a conversation's or a user's group
# (consumers: `chat_events`; followers: `chat.engine.follow`).
EVENTS_MESSAGE = "chat.events"
END_OF_RUN = ("run.finished", "run.paused")
# The events that end every run, in order (see `end_of_run`); their seqs are reserved before
# the reply is stored, so a process that continues the run's numbering never reuses one.
END_OF_RUN_EVENTS = ("message.completed", "usage", "run.finished")


def encode(event: dict[str, Any]) -> str:
    """One event as compact JSON text (non-ASCII kept as is; JSON escapes every newline)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


# --- Events of a run (numbered by the stream) ---------------------------------------------
def conversation_truncated(message_ids) -> dict[str, Any]:
    return {"type": "conversation.truncated", "messages": list(message_ids)}


def message_created(message: Message, *, request_id: str) -> dict[str, Any]:
    return {
        "type": "message.created",
        "message": str(message.public_id),
        "role": message.role,
        "content": message.content,
        "request_id": request_id or None,
    }


def run_started(reply: Message, *, agent: str, request_id: str) -> dict[str, Any]:
    return {"type": "run.started", "message": str(reply.public_id), "agent": agent, "request_id": request_id or None}


def run_progress(stage: str, **data: Any) -> dict[str, Any]:
    return {"type": "run.progress", "stage": stage, **data}


def message_delta(text: str) -> dict[str, Any]:
    return {"type": "message.delta", "delta": text}


def tool_called(*, call_id: str, name: str, arguments: Any, agent: str) -> dict[str, Any]:
    return {"type": "tool.called", "call_id": call_id, "name": name, "arguments": arguments, "agent": agent}


def tool_output(*, call_id: str, output: str, failed: bool) -> dict[str, Any]:
    return {"type": "tool.output", "call_id": call_id, "output": output, "failed": failed}


def agent_updated(agent: str) -> dict[str, Any]:
    return {"type": "agent.updated", "agent": agent}


def guardrail_tripped(*, guardrail: str, message: str) -> dict[str, Any]:
    return {"type": "guardrail.tripped", "guardrail": guardrail, "message": message}


def approval_requested(*, call_id: str, name: str, arguments: Any, agent: str) -> dict[str, Any]:
    return {"type": "approval.requested", "call_id": call_id, "name": name, "arguments": arguments, "agent": agent}


def run_paused(status: str) -> dict[str, Any]:
    return {"type": "run.paused", "status": status}


def approval_resolved(*, call_id: str, status: str) -> dict[str, Any]:
    return {"type": "approval.resolved", "call_id": call_id, "status": status}


def message_completed(reply: Message) -> dict[str, Any]:
    return {
        "type": "message.completed",
        "message": str(reply.public_id),
        "status": reply.status,
        "agent": reply.agent_name,
        "content": reply.content,
        "html": render_markdown(reply.content),
        "structured": reply.structured,
        "card": render_card(reply.structured),
        "activity": reply.activity,
    }


def usage(reply: Message) -> dict[str, Any]:
    return {"type": "usage", "message": str(reply.public_id), **message_usage(reply)}


def run_finished(*, status: str, error: str) -> dict[str, Any]:
    return {"type": "run.finished", "status": status, "error": error}


def end_of_run(reply: Message, *, status: str, error: str) -> list[dict[str, Any]]:
    """The events that end every run, whoever ends it (the run's own process, a Stop of a
    parked run, an expired approval): the stored reply, its usage, the run's outcome
    (`END_OF_RUN_EVENTS`)."""
    return [message_completed(reply), usage(reply), run_finished(status=status, error=error)]


# --- Events about a conversation (not numbered) ------------------------------------------
def approval_decided(*, conversation: Conversation, run: Run, call_id: str, approved: bool, reason: str) -> dict[str, Any]:
    return {
        "type": "approval.decided",
        "conversation": str(conversation.public_id),
        "run": str(run.public_id),
        "call_id": call_id,
        "approved": approved,
        "reason": reason,
    }


# --- Events about the user's own conversations (every socket of the user: chat.activity) ----
def conversation_renamed(conversation: Conversation, *, request_id: str | None = None) -> dict[str, Any]:
    """A conversation got a new title (from the page, a socket or the API)."""
    return {
        "type": "conversation.renamed",
        "conversation": str(conversation.public_id),
        "title": conversation.title,
        "request_id": request_id,
    }


CONVERSATION_ACTIVITY = "conversation.activity"


def conversation_activity(conversation: Conversation, *, status: str, running: bool) -> dict[str, Any]:
    """A run of the conversation started, paused or ended: `running` while a run holds it
    (also while it waits for an approval), `status` the latest run's status. A socket that
    follows the conversation does not get it (the run's own events say the same)."""
    return {
        "type": CONVERSATION_ACTIVITY,
        "conversation": str(conversation.public_id),
        "agent": conversation.agent_key,
        "title": conversation.title,
        "running": running,
        "status": status,
        "updated_at": conversation.updated_at.isoformat(),
    }


def feedback_updated(message: Message, feedback: Feedback | None, *, request_id: str | None = None) -> dict[str, Any]:
    """The user rated a reply, changed the rating or comment, or took it back."""
    return {
        "type": "feedback.updated",
        "conversation": str(message.conversation.public_id),
        **feedback_json(message, feedback),
        "request_id": request_id,
    }


# --- Answers to socket frames --------------------------------------------------------------
def conversation_created(conversation: Conversation, *, request_id: str | None) -> dict[str, Any]:
    return {
        "type": "conversation.created",
        "conversation": str(conversation.public_id),
        "agent": conversation.agent_key,
        "model": conversation.model_in_use,
        "request_id": request_id,
    }


def conversation_state(conversation: Conversation, *, run: dict[str, Any] | None, request_id: str | None) -> dict[str, Any]:
    return {
        "type": "conversation.state",
        "conversation": str(conversation.public_id),
        "agent": conversation.current_agent_name,
        "run": run,
        "request_id": request_id,
    }


def pong(*, request_id: str | None) -> dict[str, Any]:
    return {"type": "pong", "request_id": request_id}


def error(exc: AppError, *, request_id: str | None = None, conversation: str | None = None) -> dict[str, Any]:
    metrics.errors.labels(exc.code).inc()
    event = {"type": "error", "code": exc.code, "message": exc.message, "request_id": request_id}
    if conversation:
        event["conversation"] = conversation
    if exc.retry_after is not None:  # seconds until the same frame may succeed (rate limits, quota)
        event["retry_after"] = exc.retry_after
    return event


# --- JSON shapes (HTTP API bodies, and parts of events) --------------------------------------
def message_usage(message: Message) -> dict[str, Any]:
    return {
        "model": message.model,
        **{name: getattr(message, name) for name in TOKEN_FIELDS},
        "cost": None if message.cost is None else str(message.cost),
        "time_to_first_token_ms": message.time_to_first_token_ms,
        "duration_ms": message.duration_ms,
    }


def run_state(run: Run, *, reply: Message | None, approvals: list[Approval]) -> dict[str, Any]:
    """An active run as `conversation.state` and `GET /api/conversations/<id>` show it."""
    return {
        "id": str(run.public_id),
        "status": run.status,
        "agent": run.agent_name,
        "message": str(reply.public_id) if reply else None,
        "approvals": [
            {
                "call_id": approval.call_id,
                "name": approval.tool_name,
                "arguments": approval.arguments,
                "agent": approval.agent_name,
                "expires_at": run.approval_expires_at.isoformat() if run.approval_expires_at else None,
            }
            for approval in approvals
        ],
    }


def agent_json(spec: AgentSpec) -> dict[str, Any]:
    """An agent users may pick, with what it is made of: the agents it hands off to (the
    starting one first), the tools they call and the guardrails that check them."""
    from agents_app import providers

    agents = list(spec.agents())
    return {
        "key": spec.key,
        "title": spec.title,
        "description": spec.description,
        "model": providers.key_for(conversation_model="", agent_model=spec.model),
        "agents": [agent.name for agent in agents],
        "tools": sorted({getattr(tool, "name", type(tool).__name__) for agent in agents for tool in agent.tools}),
        "guardrails": sorted({
            guardrail.get_name() for agent in agents for guardrail in [*agent.input_guardrails, *agent.output_guardrails]
        }),
    }


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "agent": conversation.agent_key,
        "title": conversation.title,
        "current_agent": conversation.current_agent_name,
        "model": conversation.model_in_use,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def feedback_json(message: Message, feedback: Feedback | None) -> dict[str, Any]:
    """The user's own feedback on a reply; `rating` "none" when there is none."""
    return {
        "message": str(message.public_id),
        "rating": feedback.rating if feedback else "none",
        "comment": feedback.comment if feedback else "",
        "updated_at": feedback.updated_at.isoformat() if feedback else None,
    }


def message_json(message: Message) -> dict[str, Any]:
    reply = message.role == "assistant"
    return {
        "id": str(message.public_id),
        "role": message.role,
        "status": message.status,
        "content": message.content,
        "agent": message.agent_name,
        "error": message.error,
        "run": str(message.run.public_id) if message.run_id else None,
        "activity": message.activity if reply else [],
        "structured": message.structured,
        "usage": message_usage(message) if reply else None,
        "created_at": message.created_at.isoformat(),
    }
