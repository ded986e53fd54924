"""Validation of client frames, shared by every transport that accepts them."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings

REQUEST_ID_MAX = 64


class FrameError(Exception):
    """A frame the server refuses; the socket stays open and the client gets `error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_id_of(frame: dict[str, Any]) -> str | None:
    value = frame.get("request_id")
    if value is None:
        return None
    if not isinstance(value, (str, int)) or len(str(value)) > REQUEST_ID_MAX:
        return None
    return str(value)


def required_str(frame: dict[str, Any], name: str) -> str:
    if name not in frame:
        raise FrameError("missing_field", f"'{name}' is required.")
    value = frame[name]
    if not isinstance(value, str):
        raise FrameError("invalid_field", f"'{name}' must be a string.")
    return value


def uuid_field(frame: dict[str, Any], name: str) -> uuid.UUID:
    value = required_str(frame, name)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FrameError("invalid_field", f"'{name}' must be an id.") from None


def conversation_id(frame: dict[str, Any]) -> uuid.UUID:
    return uuid_field(frame, "conversation")


def message_content(frame: dict[str, Any]) -> str:
    content = required_str(frame, "content")
    if not content.strip():
        raise FrameError("empty_content", "The message is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise FrameError("too_long", f"The message is {len(content)} characters; the limit is {limit}.")
    return content


def optional_seq(frame: dict[str, Any]) -> int:
    value = frame.get("seq", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError("invalid_field", "'seq' must be a non-negative integer.")
    return value


def approval_decision(frame: dict[str, Any]) -> tuple[bool, str]:
    """`approve` (a bool) and the optional `reason` of an approval decision."""
    approve = frame.get("approve")
    if not isinstance(approve, bool):
        raise FrameError("invalid_field", "'approve' must be true or false.")
    reason = frame.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 1000:
        raise FrameError("invalid_field", "'reason' must be a string of at most 1000 characters.")
    return approve, reason
