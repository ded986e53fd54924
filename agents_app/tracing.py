"""Where SDK traces go. By default they stay on this machine: every trace and span is stored in
the database (`TraceRecord`, `SpanRecord`) by `LocalTraceProcessor`, for review in admin.
OpenAI's exporter is added only when `AGENTS_TRACE_EXPORT_OPENAI` is on (it defaults to on
only with a real OpenAI key and no custom base URL), so a dummy key never makes the SDK retry
against an unreachable host.

The SDK calls a processor synchronously from the event loop, so the callbacks only put what
they were given on a queue; a background thread turns it into rows and writes them in
batches (gathered for `gather_seconds` after the first record), on its own database
connection. `force_flush()` waits until everything queued is written; `shutdown()` (the SDK calls it at exit) flushes and stops the thread.

With `AGENTS_TRACE_SENSITIVE_DATA` off, the run service tells the SDK not to record model and
tool inputs/outputs, and this processor drops them too (whatever a span carries): `input`,
`output` and `response` of every span, the string and structured values of custom spans'
data (numbers and flags stay), and the details of span errors.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from agents import set_trace_processors
from agents.tracing import TracingProcessor
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone

from config.logging import current_request_id, request_id_bound

log = logging.getLogger(__name__)

MAX_STRING_CHARS = 20_000  # per string value in span data: traces are for review, not archives
MAX_DEPTH = 40
SENSITIVE_KEYS = ("input", "output", "response")
REDACTED = "[redacted]"


@dataclass
class _Record:
    kind: str  # trace_start | trace_end | span
    trace_id: str
    at: datetime
    request_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    span: Any = None
    sensitive: bool = True


@functools.cache
def _trace_local() -> bool:
    """AGENTS_TRACE_LOCAL, read once: the SDK calls the processor for every span, and a lazy
    settings lookup each time showed in the load benchmark's profile."""
    return getattr(settings, "AGENTS_TRACE_LOCAL", True)


@receiver(setting_changed)
def _forget_trace_local(*, setting: str, **kwargs: Any) -> None:
    if setting == "AGENTS_TRACE_LOCAL":
        _trace_local.cache_clear()


@dataclass
class _Marker:
    done: threading.Event
    stop: bool = False


class LocalTraceProcessor(TracingProcessor):
    """Stores traces and spans in the database without blocking the caller."""

    def __init__(self, *, batch_size: int = 500, linger_seconds: float = 1.0, gather_seconds: float = 0.25) -> None:
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        # After the first record, wait this long for more before writing: a run's spans end
        # over its whole life, and one transaction for several runs' spans costs a fraction
        # of one per burst (a run's traces cost 5 ms of CPU with a write per burst).
        self.gather_seconds = gather_seconds
        self._queue: queue.SimpleQueue[_Record | _Marker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Writer-thread state: traces whose start row was written, and traces not to store
        # (their row was deleted, or their run was, with its conversation). A span that comes
        # after its conversation was deleted must not bring its tool output back.
        self._written: set[str] = set()
        self._gone: set[str] = set()

    # --- SDK callbacks: no I/O, only a queue put --------------------------------
    @staticmethod
    def enabled() -> bool:
        return _trace_local()

    def on_trace_start(self, trace) -> None:
        if not self.enabled():
            return
        exported = trace.export() or {}
        self._put(
            _Record(
                kind="trace_start",
                trace_id=trace.trace_id,
                at=timezone.now(),
                request_id=current_request_id(),
                payload={
                    "workflow_name": exported.get("workflow_name") or getattr(trace, "name", ""),
                    "group_id": exported.get("group_id") or "",
                    "metadata": dict(exported.get("metadata") or {}),
                },
            )
        )

    def on_trace_end(self, trace) -> None:
        if not self.enabled():
            return
        self._put(_Record(kind="trace_end", trace_id=trace.trace_id, at=timezone.now(), request_id=current_request_id()))

    def on_span_start(self, span) -> None:
        # Spans are stored once, when they end (with their outcome and duration).
        return None

    def on_span_end(self, span) -> None:
        if not self.enabled():
            return
        # The span is finished: the SDK no longer changes it, so the thread may read it later.
        self._put(
            _Record(
                kind="span",
                trace_id=span.trace_id,
                at=timezone.now(),
                request_id=current_request_id(),
                span=span,
                sensitive=bool(settings.AGENTS_TRACE_SENSITIVE_DATA),
            )
        )

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Block until everything queued so far is written. Returns False on timeout."""
        done = threading.Event()
        self._put(_Marker(done))
        return done.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(_Marker(done, stop=True))
        done.wait(timeout or 30.0)
        thread.join(timeout or 30.0)

    # --- the writer thread -------------------------------------------------------
    def _put(self, item: _Record | _Marker) -> None:
        self._queue.put(item)
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._work, name="trace-writer", daemon=True)
                    self._thread.start()

    def _work(self) -> None:
        from django.db import connections

        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.linger_seconds)
                except queue.Empty:
                    # Idle: give the connection back (Postgres counts them; tests drop the DB).
                    connections.close_all()
                    item = self._queue.get()
                if isinstance(item, _Record) and self.gather_seconds and self._queue.qsize() < self.batch_size:
                    time.sleep(self.gather_seconds)  # a full batch is written at once
                batch = [item]
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                records = [entry for entry in batch if isinstance(entry, _Record)]
                if records:
                    self._write_safely(records)
                markers = [entry for entry in batch if isinstance(entry, _Marker)]
                for marker in markers:
                    marker.done.set()
                if any(marker.stop for marker in markers):
                    return
        finally:
            connections.close_all()

    def _write_safely(self, records: list[_Record]) -> None:
        try:
            self._write(records)
        except Exception:
            if len(records) == 1:
                with request_id_bound(records[0].request_id):
                    log.exception("could not store %s of trace %s", records[0].kind, records[0].trace_id)
                return
            # One bad record must not cost the others: retry one by one.
            for record in records:
                self._write_safely([record])

    def _write(self, records: list[_Record]) -> None:
        from django.db import transaction

        from agents_app.models import SpanRecord, TraceRecord

        with transaction.atomic():
            trace_pks = dict(
                TraceRecord.objects.filter(trace_id__in={r.trace_id for r in records}).values_list("trace_id", "pk")
            )
            spans: list[SpanRecord] = []
            ended: dict[str, _Record] = {}
            for record in records:
                if record.trace_id in self._gone and record.kind != "trace_end":
                    continue
                if record.kind == "trace_start":
                    fields = _trace_fields(record)
                    if fields is None:
                        self._gone.add(record.trace_id)
                    elif record.trace_id in trace_pks:
                        TraceRecord.objects.filter(pk=trace_pks[record.trace_id]).update(**fields)
                    else:
                        trace_pks[record.trace_id] = TraceRecord.objects.create(trace_id=record.trace_id, **fields).pk
                elif record.kind == "span":
                    if record.trace_id not in trace_pks and record.trace_id in self._written:
                        self._gone.add(record.trace_id)  # deleted since its start was stored
                        continue
                    span = _span_fields(record)
                    if record.trace_id not in trace_pks:
                        # A span whose trace started before this processor was installed.
                        trace_pks[record.trace_id] = TraceRecord.objects.create(
                            trace_id=record.trace_id, started_at=span["started_at"]
                        ).pk
                    spans.append(SpanRecord(trace_id=trace_pks[record.trace_id], **span))
                elif record.kind == "trace_end":
                    ended[record.trace_id] = record
            SpanRecord.objects.bulk_create(spans, ignore_conflicts=True)
            for trace_id, record in ended.items():
                TraceRecord.objects.filter(trace_id=trace_id).update(ended_at=record.at)
        # Only once committed: a batch retried record by record starts from the same state.
        self._written.update(trace_pks)
        for trace_id in ended:  # nothing of a trace comes after its end
            self._written.discard(trace_id)
            self._gone.discard(trace_id)
        for record in ended.values():
            with request_id_bound(record.request_id):
                log.debug("stored trace %s", record.trace_id)


def _trace_fields(record: _Record) -> dict[str, Any] | None:
    """The trace row's fields; None for the trace of a run that no longer exists (deleted with
    its conversation before its trace was written): nothing of it is stored."""
    from django.contrib.auth import get_user_model

    from agents_app.models import TraceRecord

    # The run is named by its public id in the trace metadata; its model is the one the lazy
    # foreign key points at, so this app never imports the chat app.
    Run = TraceRecord._meta.get_field("run").related_model
    metadata = {str(k): _jsonable(v) for k, v in record.payload["metadata"].items()}
    if record.request_id:
        metadata.setdefault("request_id", record.request_id)
    run_pk = None
    if _is_uuid(metadata.get("run_id")):
        run_pk = Run.objects.filter(public_id=metadata["run_id"]).values_list("pk", flat=True).first()
        if run_pk is None:
            return None
    user_pk = None
    if str(metadata.get("user_id", "")).isdigit():
        user_pk = get_user_model().objects.filter(pk=int(metadata["user_id"])).values_list("pk", flat=True).first()
    return {
        "workflow_name": str(record.payload["workflow_name"] or "")[:200],
        "group_id": str(record.payload["group_id"] or "")[:100],
        "metadata": metadata,
        "run_id": run_pk,
        "user_id": user_pk,
        "agent_key": str(metadata.get("agent") or "")[:64],
        "started_at": record.at,
    }


def _span_fields(record: _Record) -> dict[str, Any]:
    span = record.span
    span_data = span.span_data
    kind = span_data.type
    data = dict(span_data.export())
    if kind == "response":
        # The Responses API span exports only ids; keep the exchange itself for review.
        response = getattr(span_data, "response", None)
        data["model"] = getattr(response, "model", None)
        data["input"] = getattr(span_data, "input", None)
        data["output"] = list(response.output) if response is not None else None
    error = _jsonable(span.error) if span.error else None
    if not record.sensitive:
        data = _redacted(kind, data)
        if isinstance(error, dict):
            error = {"message": error.get("message", "Error")}
    started, ended = _parse_time(span.started_at), _parse_time(span.ended_at)
    duration = int((ended - started).total_seconds() * 1000) if started and ended else None
    return {
        "span_id": span.span_id,
        "parent_id": span.parent_id or "",
        "kind": kind[:32],
        "name": _span_name(kind, span_data, data)[:200],
        "started_at": started,
        "ended_at": ended,
        "duration_ms": max(duration, 0) if duration is not None else None,
        "data": _jsonable(data),
        "error": error,
    }


def _span_name(kind: str, span_data: Any, data: dict[str, Any]) -> str:
    if kind == "handoff":
        return f"{data.get('from_agent') or '?'} → {data.get('to_agent') or '?'}"
    if kind == "turn":
        return f"turn {getattr(span_data, 'turn', '?')} · {getattr(span_data, 'agent_name', '')}"
    if kind in ("generation", "response"):
        return str(data.get("model") or kind)
    if kind == "mcp_tools":
        return str(data.get("server") or kind)
    return str(getattr(span_data, "name", None) or kind)


def _redacted(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    clean = dict(data)
    for key in SENSITIVE_KEYS:
        if clean.get(key) is not None:
            clean[key] = REDACTED
    if kind == "custom" and isinstance(clean.get("data"), Mapping):
        # Custom spans carry whatever their author put in: keep numbers and flags only.
        clean["data"] = {
            str(k): v if v is None or isinstance(v, (bool, int, float)) else REDACTED for k, v in clean["data"].items()
        }
    return clean


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _text(value: str) -> str:
    value = value.replace("\x00", "")  # Postgres jsonb refuses NUL
    if len(value) > MAX_STRING_CHARS:
        return value[:MAX_STRING_CHARS] + f"… [{len(value) - MAX_STRING_CHARS} more characters]"
    return value


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Plain JSON (what a JSONField stores on SQLite and Postgres alike)."""
    if depth > MAX_DEPTH:
        return "…"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping):
        return {_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if hasattr(value, "model_dump"):
        try:
            return _jsonable(value.model_dump(mode="json", exclude_none=True), depth + 1)
        except Exception:
            return _text(repr(value))
    if isinstance(value, (datetime, date, Decimal, uuid.UUID)):
        return str(value)
    return _text(str(value))


# --- configuration --------------------------------------------------------------------
_processor: LocalTraceProcessor | None = None


def local_processor() -> LocalTraceProcessor:
    global _processor
    if _processor is None:
        _processor = LocalTraceProcessor()
    return _processor


def local_processors() -> list[TracingProcessor]:
    # Always installed; `AGENTS_TRACE_LOCAL` is read on every callback, so it can be switched.
    return [local_processor()]


def flush(timeout: float = 30.0) -> bool:
    """Write every trace and span queued so far (commands before they exit, tests)."""
    return local_processor().force_flush(timeout)


def configure() -> None:
    processors = local_processors()
    if settings.AGENTS_TRACE_EXPORT_OPENAI:
        from agents.tracing.processors import default_processor

        processors.append(default_processor())
    set_trace_processors(processors)
