from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import Model

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


@dataclass
class ChatContext:
    """What tools, guardrails and dynamic instructions know about the run they serve.

    Tools read the user from here, never from model-provided arguments: the model can be
    talked into naming someone else's id, the context cannot.
    """

    user: AbstractBaseUser
    # The chat app's Conversation row (this app never imports chat: tools only store it on their
    # own rows, such as a ticket's lazy foreign key, and read `public_id`).
    conversation: Model
    request_id: str = ""
    # The key of the model the run uses (agents_app.providers): nested runs use it too.
    model_key: str = ""
    # Free-form per-run scratch space for tools (e.g. counters); never persisted.
    extras: dict[str, Any] = field(default_factory=dict)
