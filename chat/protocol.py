"""Validation of client frames, shared by every transport that accepts them (the socket's
frames and the HTTP API's JSON bodies and parameters). A refusal is an `AppError` with the
frame's problem; its message never repeats more than a few characters of what was sent."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django.conf import settings

from config.errors import AppError

REQUEST_ID_MAX = 64
AGENT_KEY_MAX = 64
CALL_ID_MAX = 128  # as long as a stored call id (chat.Approval.call_id)
TITLE_MAX = 200  # as long as a stored title (chat.Conversation.title)
COMMENT_MAX = 2000  # as long as a stored feedback comment (chat.Feedback.COMMENT_CHARS)
# A frame's rating, and what `chat.feedback.feedback_give` calls it ("" takes the feedback back).
RATINGS = {"up": "up", "down": "down", "none": ""}
EXPORT_FORMATS = ("json", "markdown")
# Deeper frames are refused: nothing the protocol defines nests more than a few levels, and
# anything that walks a frame recursively (repr, json.dumps, logging) must not hit the
# interpreter's recursion limit.
MAX_DEPTH = 32
# Sequence numbers, offsets and limits: anything larger is no position a client can hold,
# and would overflow a database integer or a Redis index.
MAX_INT = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")
# Text that no database column can hold: NUL (PostgreSQL refuses it) and unpaired surrogates
# (not encodable as UTF-8 at all; JSON can spell them as "\ud800").
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """A socket frame or an HTTP body: JSON text of at most CHAT_MAX_FRAME_BYTES holding an
    object nested at most MAX_DEPTH levels."""
    limit = settings.CHAT_MAX_FRAME_BYTES
    if len(raw if isinstance(raw, bytes) else raw.encode(errors="surrogatepass")) > limit:
        raise AppError("too_large", f"Frames are limited to {limit} bytes.")
    try:
        frame = json.loads(raw)
    except RecursionError:
        raise AppError("bad_frame", f"Frames may nest at most {MAX_DEPTH} levels.") from None
    except ValueError:  # also undecodable bytes and integers too long to convert
        raise AppError("bad_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise AppError("bad_frame", "A frame must be a JSON object.")
    if _depth(frame) > MAX_DEPTH:
        raise AppError("bad_frame", f"Frames may nest at most {MAX_DEPTH} levels.")
    return frame


def _depth(value: Any) -> int:
    """How deeply `value` nests (without recursion, so any depth json.loads returned is safe)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, dict):
            current = current.values()
        elif not isinstance(current, list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        pending.extend((item, depth + 1) for item in current)
    return deepest


def shown(value: Any, limit: int = 40) -> str:
    """How an error message quotes a value the client sent: its JSON spelling, cut with an
    ellipsis (arrays and objects by their kind only)."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    text = json.dumps(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def storable(value: str) -> bool:
    """Whether `value` can be stored and logged as text (no NUL, no unpaired surrogate)."""
    return _UNSTORABLE.search(value) is None


def bounded_int(value: str | None, name: str, *, default: int, minimum: int = 0) -> int:
    """A query parameter or header holding an integer from `minimum` to MAX_INT, in ASCII
    digits (`str.isdigit` also accepts "²" and "٣", which `int` refuses)."""
    if value is None or value == "":
        return default
    if not _DIGITS.fullmatch(value) or not minimum <= int(value) <= MAX_INT:
        raise AppError("invalid_field", f"'{name}' must be an integer from {minimum} to {MAX_INT}.")
    return int(value)


def request_id_of(frame: dict[str, Any]) -> str | None:
    """The frame's `request_id`, or None when it has none or one that cannot be echoed and
    stored (not a string or integer, longer than REQUEST_ID_MAX, or unstorable text)."""
    value = frame.get("request_id")
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    value = str(value)
    if len(value) > REQUEST_ID_MAX or not storable(value):
        return None
    return value


def required_str(frame: dict[str, Any], name: str, *, max_length: int | None = None) -> str:
    """A text field that can be stored: present, a string, no NUL or unpaired surrogate, and
    at most `max_length` characters when given."""
    if name not in frame:
        raise AppError("missing_field", f"'{name}' is required.")
    value = frame[name]
    if not isinstance(value, str):
        raise AppError("invalid_field", f"'{name}' must be a string.")
    if not storable(value):
        raise AppError("invalid_field", f"'{name}' must not contain NUL characters or unpaired surrogates.")
    if max_length is not None and len(value) > max_length:
        raise AppError("invalid_field", f"'{name}' must be at most {max_length} characters.")
    return value


def agent_key(frame: dict[str, Any]) -> str:
    return required_str(frame, "agent", max_length=AGENT_KEY_MAX)


def model_choice(frame: dict[str, Any]) -> str | None:
    """The optional `model` of a message, an edit, a regeneration or a new conversation: a
    model users may pick (`unknown_model` otherwise); None when the frame has none."""
    if frame.get("model") is None:
        return None
    from agents_app import providers

    return providers.pickable(required_str(frame, "model", max_length=AGENT_KEY_MAX))


def uuid_field(frame: dict[str, Any], name: str) -> uuid.UUID:
    value = required_str(frame, name)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise AppError("invalid_field", f"'{name}' must be an id.") from None


def conversation_id(frame: dict[str, Any]) -> uuid.UUID:
    return uuid_field(frame, "conversation")


def message_content(frame: dict[str, Any]) -> str:
    content = required_str(frame, "content")
    if not content.strip():
        raise AppError("empty_content", "The message is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise AppError("too_long", f"The message is {len(content)} characters; the limit is {limit}.")
    return content


def optional_seq(frame: dict[str, Any]) -> int:
    value = frame.get("seq", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise AppError("invalid_field", f"'seq' must be an integer from 0 to {MAX_INT}.")
    return value


def approval_decision(frame: dict[str, Any]) -> tuple[bool, str]:
    """`approve` (a bool) and the optional `reason` of an approval decision."""
    approve = frame.get("approve")
    if not isinstance(approve, bool):
        raise AppError("invalid_field", "'approve' must be true or false.")
    reason = frame.get("reason")
    reason = "" if reason is None else reason
    if not isinstance(reason, str) or len(reason) > 1000:
        raise AppError("invalid_field", "'reason' must be a string of at most 1000 characters.")
    if not storable(reason):
        raise AppError("invalid_field", "'reason' must not contain NUL characters or unpaired surrogates.")
    return approve, reason


def call_id(frame: dict[str, Any]) -> str:
    return required_str(frame, "call_id", max_length=CALL_ID_MAX)


def known_call_id(value: str) -> bool:
    """Whether a call id from a URL could name a stored tool call at all."""
    return len(value) <= CALL_ID_MAX and storable(value)


def title(frame: dict[str, Any]) -> str:
    """A conversation's new `title`: text of at most TITLE_MAX characters as sent (blank
    titles are refused by the rename service, which also collapses whitespace)."""
    return required_str(frame, "title", max_length=TITLE_MAX)


def feedback(frame: dict[str, Any]) -> tuple[str, str]:
    """`rating` ("up", "down" or "none", which takes the feedback back) and the optional
    `comment`, as `chat.feedback.feedback_give` takes them."""
    if "rating" not in frame:
        raise AppError("missing_field", "'rating' is required.")
    rating = frame["rating"]
    if not isinstance(rating, str) or rating not in RATINGS:
        raise AppError("invalid_field", "'rating' must be \"up\", \"down\" or \"none\".")
    comment = frame.get("comment")
    comment = "" if comment is None else comment
    if not isinstance(comment, str) or len(comment) > COMMENT_MAX:
        raise AppError("invalid_field", f"'comment' must be a string of at most {COMMENT_MAX} characters.")
    if not storable(comment):
        raise AppError("invalid_field", "'comment' must not contain NUL characters or unpaired surrogates.")
    return RATINGS[rating], comment


def export_format(value: str | None) -> str:
    """An export's `format` query parameter: "json" (the default) or "markdown"."""
    if value is None or value == "":
        return "json"
    if value not in EXPORT_FORMATS:
        raise AppError("invalid_field", "'format' must be \"json\" or \"markdown\".")
    return value
