from django.contrib import admin
from django.db.models import Sum
from django.urls import reverse
from django.utils.html import format_html

from chat.models import Conversation, Message, Run

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
    list_display = ("__str__", "owner", "agent_key", "current_agent_name", "updated_at", "tokens", "total_cost")
    list_filter = ("agent_key", "updated_at")
    search_fields = ("title", "owner__email", "messages__content", "public_id")
    raw_id_fields = ("owner",)
    readonly_fields = ("public_id", "created_at", "updated_at", "session_link", "tokens", "total_cost")
    inlines = [MessageInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            tokens_sum=Sum("messages__total_tokens"), cost_sum=Sum("messages__cost")
        )

    @admin.display(description="Tokens", ordering="tokens_sum")
    def tokens(self, obj) -> int:
        return obj.tokens_sum or 0

    @admin.display(description="Cost (USD)", ordering="cost_sum")
    def total_cost(self, obj):
        return obj.cost_sum

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
    list_display = ("created_at", "conversation", "role", "agent_name", "status", "model", "total_tokens", "cost")
    list_filter = ("role", "status", "model", "created_at")
    search_fields = ("content", "conversation__title", "conversation__owner__email")
    raw_id_fields = ("conversation", "run")
    readonly_fields = ("public_id", "conversation", "run", "role", "content", "agent_name", "status", "error", "activity", "structured", *USAGE_FIELDS, "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("public_id", "conversation", "run", "role", "agent_name", "status", "error")}),
        ("Content", {"fields": ("content", "activity", "structured")}),
        ("Usage", {"fields": USAGE_FIELDS}),
        ("Times", {"fields": ("created_at", "updated_at")}),
    )


@admin.register(Run)
class RunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("public_id", "conversation", "agent_name", "status", "created_at", "finished_at")
    list_filter = ("status", "created_at")
    search_fields = ("public_id", "conversation__title", "error")
    raw_id_fields = ("conversation",)
    readonly_fields = [f.name for f in Run._meta.fields]
