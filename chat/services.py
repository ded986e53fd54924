"""Writes to conversations that are not a run's: creating one, deleting one. The run's own
transitions (admit, start, beat, pause, resume, finish, interrupt) live in `chat.engine`.
Synchronous and atomic; async callers wrap them with `sync_to_async`. Refusals are
`AppError`s, which every transport shows the same way."""

from __future__ import annotations

from django.db import transaction

from agents_app.models import AgentSession, TraceRecord
from agents_app.registry import AgentSpec, UnknownAgent, available_specs, get_spec
from chat.models import Conversation
from config import ratelimits
from config.errors import AppError


def agent_for(*, user, agent_key: str) -> AgentSpec:
    """The agent `user` may use under `agent_key`; `unknown_agent` otherwise (a staff-only
    agent does not exist for anyone else, also for a conversation created with it earlier)."""
    try:
        spec = get_spec(agent_key)
    except UnknownAgent:
        spec = None
    if spec is None or not spec.available_to(user):
        known = ", ".join(spec.key for spec in available_specs(user))
        raise AppError("unknown_agent", f"There is no agent {agent_key!r}. Available: {known}.")
    return spec


@transaction.atomic
def conversation_create(*, owner, agent_key: str, title: str = "", model_key: str | None = None) -> Conversation:
    """A new conversation with an agent the owner may use, on `model_key` when given (a model
    users may pick, checked by the caller: `providers.pickable`)."""
    ratelimits.check_conversation_create(user_id=owner.pk)
    spec = agent_for(user=owner, agent_key=agent_key)
    return Conversation.objects.create(
        owner=owner, agent_key=spec.key, title=title[:200], current_agent_name=spec.agent.name, model_key=model_key or ""
    )


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation with its messages, runs, SDK history and traces (their spans hold
    the tool arguments and outputs). The usage ledger stays: it holds no content."""
    AgentSession.objects.filter(session_id=conversation.session_id).delete()
    TraceRecord.objects.of_groups([conversation.public_id]).delete()
    conversation.delete()
