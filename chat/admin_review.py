"""Filters and read-only displays for reviewing conversations, messages and runs in admin
(used by chat/admin.py)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from chat.models import Message, Run
from chat.usage import format_cost


def with_review_totals(conversations: QuerySet) -> QuerySet:
    """Usage totals (from the ledger: regenerated replies included) and the status of the last
    run, for the conversation changelist."""
    last_run = Run.objects.filter(conversation=OuterRef("pk")).order_by("-created_at", "-id")
    return conversations.annotate(
        tokens_sum=Sum("usage_records__total_tokens"),
        cost_sum=Sum("usage_records__cost"),
        unknown_costs=Count(
            "usage_records", filter=Q(usage_records__cost__isnull=True, usage_records__total_tokens__gt=0)
        ),
        last_run_status=Subquery(last_run.values("status")[:1]),
    )


class LastRunStatusFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_run"

    def lookups(self, request, model_admin):
        return [*Run.Status.choices, ("none", "No run yet")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        last_run = Run.objects.filter(conversation=OuterRef("pk")).order_by("-created_at", "-id")
        queryset = queryset.annotate(_last_run_status=Subquery(last_run.values("status")[:1]))
        if value == "none":
            return queryset.filter(_last_run_status__isnull=True)
        return queryset.filter(_last_run_status=value)


class MessageStatusFilter(admin.SimpleListFilter):
    title = "has a reply that is"
    parameter_name = "reply_status"

    def lookups(self, request, model_admin):
        return [(value, label) for value, label in Message.Status.choices if value != Message.Status.COMPLETED]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        replies = Message.objects.filter(role=Message.Role.ASSISTANT, status=self.value())
        return queryset.filter(pk__in=replies.values("conversation_id"))


def cost_cell(cost, unknown: int = 0, tokens: int = 1) -> str:
    return format_cost(cost or 0, unknown=unknown, spent=tokens) if (cost is not None or unknown) else "$0"


def pretty_json(value: Any) -> str:
    return format_html(
        "<pre style='white-space:pre-wrap;margin:0;max-height:40em;overflow:auto'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, default=str),
    )


def events_table(events: list[dict[str, Any]]) -> str:
    """A run's event log (no deltas) as a compact table: seq, type, the rest."""
    if not events:
        return "—"
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td><code>{}</code></td><td><pre style='white-space:pre-wrap;margin:0'>{}</pre></td></tr>",
        (
            (
                event.get("seq", ""),
                event.get("type", ""),
                json.dumps(
                    {k: v for k, v in event.items() if k not in ("seq", "type", "conversation", "run")},
                    ensure_ascii=False,
                    default=str,
                )[:2000],
            )
            for event in events
        ),
    )
    return format_html("<table><thead><tr><th>seq</th><th>event</th><th>data</th></tr></thead><tbody>{}</tbody></table>", rows)


def trace_links(run: Run) -> str:
    traces = list(run.traces.order_by("started_at")) if run and run.pk else []
    if not traces:
        return "—"
    return format_html_join(
        " · ",
        '<a href="{}">timeline of {}</a>',
        (
            (reverse("admin:agents_app_tracerecord_timeline", args=[trace.pk]), trace.workflow_name or trace.trace_id)
            for trace in traces
        ),
    )


def admin_link(obj, label: str | None = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))
