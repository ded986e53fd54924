"""Live events about a user's own conversations, for every tab that user has open.

Every socket of a user joins the channel-layer group `user.<id>` (`chat.consumers`), whatever
conversation it shows. These events go there, only after the change they announce has
committed, so every tab on every process hears of it and none hears of a rolled-back change:

* `conversation.renamed`: `chat.conversations.conversation_rename` (page form, socket, API);
* `conversation.activity`: a run started, paused for an approval or ended (`chat.engine.runs`; and
  `chat.engine.transitions` when the sweeper ends a run whose process died or whose approval expired), so
  the sidebar moves that conversation to the top and marks it running;
* `feedback.updated`: `chat.feedback.feedback_give`.

Their shapes are in `chat.wire`; they carry `conversation` but no `run`/`seq` (nothing to
replay: the database has the state, and a page that reconnects renders it afresh). Sending
never fails the change itself: with the channel layer down, open tabs just miss the update.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chat import wire
from chat.models import Conversation, Run
from chat.wire import EVENTS_MESSAGE

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    """The group every socket of the user joins (a valid group name: `user.<digits>`)."""
    return f"user.{int(user_id)}"


async def send_to_user(user_id: int, event: dict[str, Any]) -> None:
    """`event` to every socket of the user, on every process (the socket's `chat.events`)."""
    try:
        await get_channel_layer().group_send(user_group(user_id), {"type": EVENTS_MESSAGE, "events": [event]})
    except Exception as exc:  # the layer is down: the change is stored, the tabs find it on reload
        log.warning("could not tell the tabs of user %s about %s (%r)", user_id, event.get("type"), exc)


def send_to_user_on_commit(user_id: int, event: dict[str, Any]) -> None:
    """For synchronous services: send `event` once the current transaction commits (at once
    outside one)."""
    transaction.on_commit(lambda: async_to_sync(send_to_user)(user_id, event))


async def conversation_changed(conversation: Conversation, *, active_status: str | None = None) -> None:
    """A run of `conversation` started, paused or ended, and that is committed: tell the
    owner's tabs the conversation's title, latest activity and whether a run holds it, as
    the database has them now (whoever calls, the event says what is true).

    `active_status`: the status of the conversation's active run, from the run itself (it
    starts, or pauses). An active run is the latest, so its status need not be read back; a
    run that ended may already have a successor, so then the latest is read."""
    try:
        row = await Conversation.objects.filter(pk=conversation.pk).only(
            "public_id", "owner_id", "agent_key", "title", "updated_at"
        ).afirst()
        if row is None:  # deleted meanwhile
            return
        latest = active_status
        if latest is None:
            latest = await Run.objects.filter(conversation_id=row.pk).order_by("-created_at", "-id").values_list(
                "status", flat=True
            ).afirst()
    except Exception as exc:  # never let a notice break the run that sends it
        log.warning("could not read conversation %s for its activity event (%r)", conversation.public_id, exc)
        return
    status = latest or ""
    await send_to_user(row.owner_id, wire.conversation_activity(row, status=status, running=status in Run.ACTIVE_STATUSES))
