from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chat.models import Conversation


@dataclass
class ChatContext:
    """What tools, guardrails and dynamic instructions know about the run they serve.

    Tools read the user from here, never from model-provided arguments: the model can be
    talked into naming someone else's id, the context cannot.
    """

    user: AbstractBaseUser
    conversation: Conversation
    request_id: str = ""
    # Free-form per-run scratch space for tools (e.g. counters); never persisted.
    extras: dict[str, Any] = field(default_factory=dict)
