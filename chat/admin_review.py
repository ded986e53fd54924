"""Filters and read-only displays for reviewing conversations, messages and runs in admin
(used by chat/admin.py)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from chat.models import Feedback, Message, Run
from usage.formatting import format_cost


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


class FeedbackFilter(admin.SimpleListFilter):
    """Filter by the feedback users gave: on conversations (any of its replies) or on messages.
    `feedback_path` is the lookup from the model admin's rows to Feedback rows."""

    title = "feedback"
    parameter_name = "feedback"
    feedback_path = "feedback"  # Message -> Feedback

    def lookups(self, request, model_admin):
        return [
            ("up", "👍 Good reply"),
            ("down", "👎 Bad reply"),
            ("comment", "With a comment"),
            ("any", "Any feedback"),
            ("none", "No feedback"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value == "none":
            return queryset.exclude(pk__in=queryset.filter(**{f"{self.feedback_path}__isnull": False}).values("pk"))
        matching = Feedback.objects.all()
        if value in (Feedback.Rating.UP, Feedback.Rating.DOWN):
            matching = matching.filter(rating=value)
        elif value == "comment":
            matching = matching.exclude(comment="")
        # A subquery, not a join: a join would repeat a row once per matching feedback.
        key = "message_id" if self.feedback_path == "feedback" else "message__conversation_id"
        return queryset.filter(pk__in=matching.values(key))


class ConversationFeedbackFilter(FeedbackFilter):
    feedback_path = "messages__feedback"


def with_feedback_counts(queryset: QuerySet, *, message_path: str = "pk") -> QuerySet:
    """Thumbs up and down per row, for a changelist column. Subqueries, not joins, so they never
    multiply other totals on the same rows (see `with_review_totals`). `message_path`: the field
    of a Feedback's message that the row's pk matches ("pk" for messages, "conversation" for
    conversations)."""

    def count(rating: str):
        rows = (
            Feedback.objects.filter(**{f"message__{message_path}": OuterRef("pk")}, rating=rating)
            .order_by()
            .values(f"message__{message_path}")
            .annotate(n=Count("pk"))
            .values("n")[:1]
        )
        return Coalesce(Subquery(rows), 0)

    return queryset.annotate(feedback_up=count(Feedback.Rating.UP), feedback_down=count(Feedback.Rating.DOWN))


def feedback_cell(obj) -> str:
    up, down = getattr(obj, "feedback_up", 0) or 0, getattr(obj, "feedback_down", 0) or 0
    if not (up or down):
        return "—"
    return " ".join(part for part in (f"👍 {up}" if up else "", f"👎 {down}" if down else "") if part)


def feedback_list(feedback: list[Feedback]) -> str:
    """Every user's verdict on a reply, newest first, each linked to its admin page."""
    if not feedback:
        return "—"
    rows = format_html_join(
        "",
        "<li>{} <strong>{}</strong> by {} · {}{}</li>",
        (
            (
                "👍" if item.rating == Feedback.Rating.UP else "👎",
                item.get_rating_display(),
                item.user,
                item.updated_at.strftime("%Y-%m-%d %H:%M"),
                format_html(": “{}”", item.comment) if item.comment else "",
            )
            for item in feedback
        ),
    )
    return format_html('<ul class="feedback-list">{}</ul>', rows)


def run_feedback(run: Run) -> str:
    """The feedback on a run's reply, for showing next to its trace."""
    if run is None or not run.pk:
        return "—"
    return feedback_list(list(Feedback.objects.filter(message__run=run).select_related("user")))
