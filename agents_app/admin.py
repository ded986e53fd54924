import json

from django.contrib import admin
from django.utils.html import format_html

from agents_app.items import text_of
from agents_app.models import AgentSession, SessionItem


def _pretty(payload: str) -> str:
    return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", json.dumps(json.loads(payload), indent=2, ensure_ascii=False))


def _summary(payload: str) -> str:
    item = json.loads(payload)
    kind = item.get("type") or "message"
    if kind == "message" or "role" in item:
        return f"{item.get('role')}: {text_of(item.get('content'))[:120]}"
    if kind == "function_call":
        return f"call {item.get('name')}({item.get('arguments', '')[:80]}) [{item.get('call_id')}]"
    if kind == "function_call_output":
        return f"output [{item.get('call_id')}]: {str(item.get('output'))[:100]}"
    return kind


class SessionItemInline(admin.TabularInline):
    model = SessionItem
    fields = ("id", "created_at", "summary")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("id",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Item")
    def summary(self, obj) -> str:
        return _summary(obj.payload)


@admin.register(AgentSession)
class AgentSessionAdmin(admin.ModelAdmin):
    """SDK history is read-only: an edited item would be sent to the model as is."""

    list_display = ("session_id", "created_at", "updated_at", "item_count")
    search_fields = ("session_id",)
    readonly_fields = ("session_id", "created_at", "updated_at")
    inlines = [SessionItemInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Items")
    def item_count(self, obj) -> int:
        return obj.items.count()


@admin.register(SessionItem)
class SessionItemAdmin(admin.ModelAdmin):
    list_display = ("id", "session", "created_at", "summary")
    list_select_related = ("session",)
    search_fields = ("session__session_id", "payload")
    readonly_fields = ("session", "created_at", "pretty_payload")
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Item")
    def summary(self, obj) -> str:
        return _summary(obj.payload)

    @admin.display(description="Payload")
    def pretty_payload(self, obj) -> str:
        return _pretty(obj.payload)


# Admin of the other agents_app models lives next door, one module per concern.
from agents_app import admin_tools, admin_tracing  # noqa: E402,F401
