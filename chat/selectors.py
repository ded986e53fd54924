"""Reads the transports share: "the user's conversation", its active run as clients see it."""

from __future__ import annotations

import uuid
from typing import Any

from chat import wire
from chat.models import Conversation, Message, Run
from config.errors import AppError


def conversation_for(user, public_id: uuid.UUID) -> Conversation:
    """The user's own conversation. Someone else's is "not found", like a missing one, so its
    existence is not revealed."""
    conversation = Conversation.objects.for_user(user).filter(public_id=public_id).first()
    if conversation is None:
        raise AppError("not_found", "No such conversation.")
    return conversation


async def aconversation_for(user, public_id: uuid.UUID) -> Conversation:
    conversation = await Conversation.objects.for_user(user).filter(public_id=public_id).afirst()
    if conversation is None:
        raise AppError("not_found", "No such conversation.")
    return conversation


async def amessage_for(user, public_id: uuid.UUID) -> Message:
    """A message of one of the user's own conversations (with its conversation); someone
    else's is "not found", like a missing one."""
    message = await Message.objects.for_user(user).select_related("conversation").filter(public_id=public_id).afirst()
    if message is None:
        raise AppError("not_found", "No such message.")
    return message


async def arun_state(run: Run | None) -> dict[str, Any] | None:
    """The active run as `conversation.state` and the API show it (or None)."""
    if run is None:
        return None
    reply = await run.messages.filter(role=Message.Role.ASSISTANT).afirst()
    approvals = [approval async for approval in run.approvals.pending()]
    return wire.run_state(run, reply=reply, approvals=approvals)
