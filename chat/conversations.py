"""Services that change a conversation itself (not its runs): renaming, for now.

The page's form, the socket's `conversation.rename` frame and the HTTP API's
`PATCH /api/conversations/<id>` all call `conversation_rename`, so every transport gets the
same validation, the same errors (`AppError`) and the same live update: once the new title is
committed, every open tab of the owner hears `conversation.renamed` (`chat.activity`)."""

from __future__ import annotations

from django.db import transaction

from chat import activity, wire
from chat.models import Conversation
from config.errors import AppError

TITLE_CHARS = Conversation._meta.get_field("title").max_length


@transaction.atomic
def conversation_rename(*, conversation: Conversation, title: str, request_id: str | None = None) -> Conversation:
    """Give the conversation a new title (whitespace collapsed). Renaming is not activity: the
    conversation keeps its place in the sidebar. Refuses with `empty_title` or `too_long`."""
    title = " ".join((title or "").split())
    if not title:
        raise AppError("empty_title", "A conversation needs a title.")
    if len(title) > TITLE_CHARS:
        raise AppError("too_long", f"A title has at most {TITLE_CHARS} characters.")
    Conversation.objects.filter(pk=conversation.pk).update(title=title)
    conversation.title = title
    activity.send_to_user_on_commit(conversation.owner_id, wire.conversation_renamed(conversation, request_id=request_id))
    return conversation
