from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from chat import engine
from chat.admin_review import (
    ConversationFeedbackFilter,
    FeedbackFilter,
    LastRunStatusFilter,
    MessageStatusFilter,
    admin_link,
    cost_cell,
    events_table,
    feedback_cell,
    feedback_list,
    run_feedback,
    trace_links,
    with_feedback_counts,
    with_review_totals,
)
from chat.models import Conversation, Feedback, Message, Run

USAGE_FIELDS = (
    "model", "requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
    "total_tokens", "cost", "time_to_first_token_ms", "duration_ms",
)


class ReadOnlyMixin:
    """Staff review history here; changing it would desynchronise it from the SDK memory."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class MessageInline(ReadOnlyMixin, admin.TabularInline):
    model = Message
    fields = ("created_at", "role", "agent_name", "status", "content", "total_tokens", "cost")
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "__str__", "owner", "agent_key", "current_agent_name", "last_run", "created_at", "updated_at", "tokens",
        "total_cost", "feedback",
    )
    list_filter = (
        ("owner", admin.RelatedOnlyFieldListFilter), "agent_key", LastRunStatusFilter, MessageStatusFilter,
        ConversationFeedbackFilter, "created_at", "updated_at",
    )
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    search_fields = ("title", "owner__email", "messages__content", "public_id")
    raw_id_fields = ("owner",)
    # Only the title may change: owner and agent are part of the history (and of its SDK memory).
    readonly_fields = (
        "public_id", "owner", "agent_key", "current_agent_name", "created_at", "updated_at", "session_link",
        "traces_link", "tokens", "total_cost",
    )
    inlines = [MessageInline]

    def has_add_permission(self, request) -> bool:
        return False

    def get_queryset(self, request):
        return with_feedback_counts(with_review_totals(super().get_queryset(request)), message_path="conversation")

    @admin.display(description="Feedback")
    def feedback(self, obj) -> str:
        return feedback_cell(obj)

    def get_search_results(self, request, queryset, search_term):
        # Search a plain queryset and keep its matches by pk: searching messages on the
        # annotated one would join them twice and multiply the usage totals.
        if not search_term:
            return queryset, False
        matches, _ = super().get_search_results(request, Conversation.objects.all(), search_term)
        return queryset.filter(pk__in=matches.values("pk")), False

    def delete_model(self, request, obj) -> None:
        engine.delete_now(conversation=obj)

    def delete_queryset(self, request, queryset) -> None:
        for conversation in queryset:
            engine.delete_now(conversation=conversation)

    @admin.display(description="Tokens", ordering="tokens_sum")
    def tokens(self, obj) -> int:
        return getattr(obj, "tokens_sum", None) or 0

    @admin.display(description="Cost (USD)", ordering="cost_sum")
    def total_cost(self, obj) -> str:
        return cost_cell(getattr(obj, "cost_sum", None), getattr(obj, "unknown_costs", 0), self.tokens(obj))

    @admin.display(description="Traces")
    def traces_link(self, obj) -> str:
        from agents_app.models import TraceRecord

        count = TraceRecord.objects.filter(group_id=str(obj.public_id)).count()
        url = reverse("admin:agents_app_tracerecord_changelist") + f"?group_id={obj.public_id}"
        return format_html('<a href="{}">{} trace(s)</a>', url, count) if count else "—"

    @admin.display(description="Last run", ordering="last_run_status")
    def last_run(self, obj) -> str:
        return getattr(obj, "last_run_status", None) or "—"

    @admin.display(description="SDK history")
    def session_link(self, obj) -> str:
        from agents_app.models import AgentSession

        session = AgentSession.objects.filter(session_id=obj.session_id).first()
        if session is None:
            return "—"
        url = reverse("admin:agents_app_agentsession_change", args=[session.pk])
        return format_html('<a href="{}">{} items</a>', url, session.items.count())


@admin.register(Message)
class MessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at", "conversation", "owner", "role", "agent_name", "status", "model", "total_tokens", "cost_usd",
        "feedback",
    )
    list_filter = ("role", "status", FeedbackFilter, "conversation__agent_key", "model", "created_at")
    list_select_related = ("conversation__owner",)
    date_hierarchy = "created_at"
    search_fields = ("content", "conversation__title", "conversation__owner__email", "run__public_id")
    raw_id_fields = ("conversation", "run")
    readonly_fields = ("public_id", "conversation", "run", "role", "content", "agent_name", "status", "error", "activity", "structured", *USAGE_FIELDS, "created_at", "updated_at", "traces", "feedback_given")
    fieldsets = (
        (None, {"fields": ("public_id", "conversation", "run", "traces", "feedback_given", "role", "agent_name", "status", "error")}),
        ("Content", {"fields": ("content", "activity", "structured")}),
        ("Usage", {"fields": USAGE_FIELDS}),
        ("Times", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="User", ordering="conversation__owner__email")
    def owner(self, obj) -> str:
        return str(obj.conversation.owner)

    @admin.display(description="Cost (USD)", ordering="cost")
    def cost_usd(self, obj) -> str:
        if obj.cost is None:
            return "unknown" if obj.total_tokens else "—"
        return cost_cell(obj.cost)

    def get_queryset(self, request):
        return with_feedback_counts(super().get_queryset(request))

    @admin.display(description="Feedback")
    def feedback(self, obj) -> str:
        return feedback_cell(obj)

    @admin.display(description="Trace")
    def traces(self, obj) -> str:
        return trace_links(obj.run)

    @admin.display(description="Users' feedback")
    def feedback_given(self, obj) -> str:
        return feedback_list(list(obj.feedback.select_related("user")))


@admin.register(Run)
class RunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("public_id", "conversation", "owner", "agent_name", "status", "request_id", "created_at", "duration")
    list_filter = ("status", "conversation__agent_key", "agent_name", "created_at")
    list_select_related = ("conversation__owner",)
    date_hierarchy = "created_at"
    search_fields = ("public_id", "request_id", "conversation__title", "conversation__owner__email", "error")
    raw_id_fields = ("conversation",)
    # The serialised RunState is server-side only and large; the events and traces tell the story.
    exclude = ("state", "events")
    readonly_fields = [
        *(f.name for f in Run._meta.fields if f.name not in ("state", "events")),
        "messages_links", "traces", "reply_feedback", "event_log",
    ]

    @admin.display(description="User", ordering="conversation__owner__email")
    def owner(self, obj) -> str:
        return str(obj.conversation.owner)

    @admin.display(description="Duration")
    def duration(self, obj) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return "—"

    @admin.display(description="Messages")
    def messages_links(self, obj) -> str:
        links = [admin_link(message, f"{message.role}: {message.content[:60]}") for message in obj.messages.all()]
        return format_html_join(" · ", "{}", ((link,) for link in links)) if links else "—"

    @admin.display(description="Trace")
    def traces(self, obj) -> str:
        return trace_links(obj)

    @admin.display(description="Feedback on the reply")
    def reply_feedback(self, obj) -> str:
        return run_feedback(obj)

    @admin.display(description="Events (no text deltas)")
    def event_log(self, obj) -> str:
        return events_table(obj.events)


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What users thought of replies: read-only, it is theirs."""

    list_display = ("updated_at", "rating_icon", "comment_excerpt", "user", "reply", "agent")
    list_filter = ("rating", ("comment", admin.EmptyFieldListFilter), "message__conversation__agent_key", "updated_at")
    list_select_related = ("user", "message__conversation", "message__run")
    date_hierarchy = "updated_at"
    search_fields = ("comment", "user__email", "message__content", "message__conversation__title")
    raw_id_fields = ("message", "user")
    readonly_fields = ("message", "user", "rating", "comment", "created_at", "updated_at", "reply", "trace")

    @admin.display(description="Rating", ordering="rating")
    def rating_icon(self, obj) -> str:
        return f"{'👍' if obj.rating == Feedback.Rating.UP else '👎'} {obj.get_rating_display()}"

    @admin.display(description="Comment")
    def comment_excerpt(self, obj) -> str:
        return obj.comment[:80] + ("…" if len(obj.comment) > 80 else "") if obj.comment else "—"

    @admin.display(description="Reply")
    def reply(self, obj) -> str:
        return admin_link(obj.message, obj.message.content[:60] or "(empty reply)")

    @admin.display(description="Agent", ordering="message__agent_name")
    def agent(self, obj) -> str:
        return obj.message.agent_name or obj.message.conversation.agent_key

    @admin.display(description="Trace")
    def trace(self, obj) -> str:
        return trace_links(obj.message.run)
