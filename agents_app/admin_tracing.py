"""Admin for local traces. Imported by admin.py.

Traces (read-only) with a timeline view per trace: spans nested by parent, bars placed by
start time and sized by duration, each with its inputs, outputs and errors. Linked from the
trace, the run and the message change pages.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from agents_app.models import SpanRecord, TraceRecord


# --- Traces ---------------------------------------------------------------------------
class SpanInline(admin.TabularInline):
    model = SpanRecord
    fields = ("started_at", "kind", "name", "duration_ms", "failed")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("started_at", "id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Error", boolean=True)
    def failed(self, obj) -> bool:
        return bool(obj.error)


@admin.register(TraceRecord)
class TraceRecordAdmin(admin.ModelAdmin):
    """Traces are evidence: read-only (deletable, like any record past its retention)."""

    list_display = ("started_at", "workflow_name", "agent_key", "user", "run_link", "span_count", "duration", "timeline")
    list_filter = ("agent_key", "workflow_name", "started_at")
    list_select_related = ("user", "run")
    date_hierarchy = "started_at"
    search_fields = ("trace_id", "group_id", "workflow_name", "user__email", "run__public_id", "spans__name")
    readonly_fields = (
        "trace_id", "workflow_name", "group_id", "run_link", "user", "agent_key", "started_at", "ended_at",
        "duration", "timeline", "pretty_metadata",
    )
    fields = readonly_fields
    inlines = [SpanInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(span_total=Count("spans"))

    def get_search_results(self, request, queryset, search_term):
        # Match on a plain queryset: a join on spans would multiply the annotated count.
        if not search_term:
            return queryset, False
        matches, _ = super().get_search_results(request, TraceRecord.objects.all(), search_term)
        return queryset.filter(pk__in=matches.values("pk")), False

    def get_urls(self):
        return [
            path(
                "<int:pk>/timeline/",
                self.admin_site.admin_view(self.timeline_view),
                name="agents_app_tracerecord_timeline",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="Run")
    def run_link(self, obj) -> str:
        if not obj.run_id:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:chat_run_change", args=[obj.run_id]), obj.run.public_id)

    @admin.display(description="Spans", ordering="span_total")
    def span_count(self, obj) -> int:
        total = getattr(obj, "span_total", None)
        return obj.spans.count() if total is None else total

    @admin.display(description="Duration")
    def duration(self, obj) -> str:
        if obj.started_at and obj.ended_at:
            return f"{(obj.ended_at - obj.started_at).total_seconds() * 1000:.0f} ms"
        return "—"

    @admin.display(description="Timeline")
    def timeline(self, obj) -> str:
        return format_html('<a href="{}">timeline</a>', reverse("admin:agents_app_tracerecord_timeline", args=[obj.pk]))

    @admin.display(description="Metadata")
    def pretty_metadata(self, obj) -> str:
        return format_html("<pre style='margin:0'>{}</pre>", json.dumps(obj.metadata, indent=2, ensure_ascii=False))

    def timeline_view(self, request, pk: int):
        trace = get_object_or_404(TraceRecord.objects.select_related("run__conversation", "user"), pk=pk)
        if not self.has_view_permission(request, trace):
            raise PermissionDenied
        rows, total_ms = timeline_rows(list(trace.spans.all()), trace_start=trace.started_at)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trace timeline: {trace.workflow_name or trace.trace_id}",
            "opts": self.model._meta,
            "trace": trace,
            "rows": rows,
            "total_ms": total_ms,
            "sensitive": settings.AGENTS_TRACE_SENSITIVE_DATA,
            "siblings": list(trace.run.traces.exclude(pk=trace.pk)) if trace.run_id else [],
        }
        return TemplateResponse(request, "admin/agents_app/tracerecord/timeline.html", context)


def timeline_rows(spans: list[SpanRecord], *, trace_start=None) -> tuple[list[dict[str, Any]], int]:
    """Spans in tree order (children after their parent, by start time), with depth and the
    position of their bar in percent of the trace's duration."""
    starts = [s.started_at for s in spans if s.started_at] + ([trace_start] if trace_start else [])
    ends = [s.ended_at for s in spans if s.ended_at]
    origin = min(starts) if starts else None
    total_ms = max(1, int((max(ends) - origin).total_seconds() * 1000)) if origin and ends else 1
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else ""
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.started_at or origin or timezone.now(), s.pk))
    rows: list[dict[str, Any]] = []

    def visit(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            offset = int((span.started_at - origin).total_seconds() * 1000) if span.started_at and origin else 0
            duration = span.duration_ms or 0
            data = dict(span.data or {})
            rows.append({
                "span": span,
                "depth": depth,
                "indent": depth * 1.2,
                "offset_ms": offset,
                "left": round(100 * offset / total_ms, 2),
                "width": max(round(100 * duration / total_ms, 2), 0.4),
                "input": _pretty(data.pop("input", None)),
                "output": _pretty(data.pop("output", None)),
                "details": _pretty({k: v for k, v in data.items() if k != "type" and v not in (None, [], {})}),
                "error": _pretty(span.error),
            })
            visit(span.span_id, depth + 1)

    visit("", 0)
    return rows, total_ms


def _pretty(value: Any) -> str:
    if value in (None, "", [], {}):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


@admin.register(SpanRecord)
class SpanRecordAdmin(admin.ModelAdmin):
    list_display = ("started_at", "kind", "name", "duration_ms", "trace")
    list_filter = ("kind",)
    list_select_related = ("trace",)
    search_fields = ("span_id", "name", "trace__trace_id")
    readonly_fields = ("span_id", "trace", "parent_id", "kind", "name", "started_at", "ended_at", "duration_ms", "pretty_data", "pretty_error")
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Data")
    def pretty_data(self, obj) -> str:
        return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", _pretty(obj.data))

    @admin.display(description="Error")
    def pretty_error(self, obj) -> str:
        return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", _pretty(obj.error)) if obj.error else "—"
