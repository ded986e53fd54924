"""Request ids in every log line, request timing, and JSON logs.

One id follows a piece of work through every log line it causes:

* HTTP: `RequestIdMiddleware` takes a sane incoming `X-Request-ID` or makes one, returns it
  in the response header and logs method, path, status and duration of the request.
* Socket frames: the consumer binds the frame's `request_id` (or a generated one) while it
  handles the frame, and passes it to the run service, which stores it on the `Run` row.
* Runs: the run task starts in a fresh `contextvars.Context` (it outlives the socket), so the
  run service binds `Run.request_id` again at the top of the task; tools and the SDK's trace
  callbacks run inside that task and inherit it.

`RequestIdFilter` copies the current id onto every record (`%(request_id)s`, "-" when there
is none); `JsonFormatter` writes one JSON object per line (`LOG_FORMAT=json`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from outside: short, printable, no spaces (it ends up in log lines).
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:\-]")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

log = logging.getLogger("request")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: Any) -> str | None:
    """The id if it is safe to log and echo, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _SANE_ID.match(value):
        return value
    return None


def current_request_id() -> str:
    return request_id_var.get()


def _loggable(value: str | None) -> str:
    # Client-chosen ids (socket frames) may hold anything: never let one forge a log line.
    return _UNSAFE.sub("_", value or "")[:64]


def bind_request_id(value: str | None) -> contextvars.Token:
    """Set the id for the current context (and the tasks and threads it starts)."""
    return request_id_var.set(_loggable(value))


@contextmanager
def request_id_bound(value: str | None) -> Iterator[str]:
    token = request_id_var.set(_loggable(value))
    try:
        yield value
    finally:
        request_id_var.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` to every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return True


# Attributes every LogRecord has; anything else was passed with `extra=` and goes into JSON.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _id_or_none(value: str | None) -> str | None:
    return None if not value or value == "-" else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _id_or_none(getattr(record, "request_id", None) or request_id_var.get()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))


class RequestIdMiddleware:
    """First in MIDDLEWARE: binds the request id, echoes it, logs the request's outcome."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        request_id, started = self._begin(request)
        with request_id_bound(request_id):
            response = None
            try:
                response = self.get_response(request)
            finally:
                self._end(request, response, request_id, started)
        return response

    async def __acall__(self, request):
        request_id, started = self._begin(request)
        with request_id_bound(request_id):
            response = None
            try:
                response = await self.get_response(request)
            finally:
                self._end(request, response, request_id, started)
        return response

    @staticmethod
    def _begin(request) -> tuple[str, float]:
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request.request_id = request_id
        return request_id, time.monotonic()

    @staticmethod
    def _end(request, response, request_id: str, started: float) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)
        status = response.status_code if response is not None else 500
        if response is not None:
            response[REQUEST_ID_HEADER] = request_id
        from django.conf import settings

        # Static files are many and boring: keep them out of INFO logs.
        level = logging.DEBUG if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")) else logging.INFO
        if status >= 500:
            level = logging.ERROR
        log.log(
            level,
            "%s %s %s %dms",
            request.method,
            request.get_full_path()[:300],
            status,
            duration_ms,
            extra={"method": request.method, "path": request.path[:300], "status": status, "duration_ms": duration_ms},
        )
