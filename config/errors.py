"""The one error type every transport understands.

A refusal the user should see (a bad frame, a busy conversation, an exhausted budget…) is an
`AppError` with a stable `code`, a `message` safe to show, and the HTTP status it maps to.
Services raise it; the socket turns it into an `error` event, the HTTP API into
`{"error": {"code", "message"}}` with `http_status` (and `Retry-After` when `retry_after` is set),
the terminal chat into a line. Nothing else is translated by hand.

It lives here, below every app, so that `usage`, `agents_app` and `chat` can all raise it.
"""

from __future__ import annotations

# The HTTP status of each code. A code missing here is a plain 400.
STATUS_OF = {
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "busy": 409,
    "approval_pending": 409,
    "not_running": 409,
    "not_editable": 409,
    "already_decided": 409,
    "reply_streaming": 409,
    "conflict": 409,
    "too_many_tokens": 409,
    "events_expired": 410,
    "too_large": 413,
    "quota_exceeded": 429,
    "rate_limited": 429,
    "too_many_runs": 429,
    "too_many_streams": 429,
    "provider_not_configured": 503,
    "overloaded": 503,
    "shutting_down": 503,
}


class AppError(Exception):
    """A refusal with a stable `code` and a `message` safe to show to the user."""

    code = "bad_request"
    message = "The request was refused."

    def __init__(self, code: str | None = None, message: str | None = None, *, retry_after: int | None = None) -> None:
        if code is not None:
            self.code = code
        if message is not None:
            self.message = message
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        return STATUS_OF.get(self.code, 400)


def overloaded() -> AppError:
    """What a client is told when the server has no capacity right now (its database
    connections are all busy): nothing was done, try again shortly."""
    return AppError("overloaded", "The server is busy right now; nothing was done. Try again in a few seconds.", retry_after=2)
