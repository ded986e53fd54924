"""Admin for the seed agents' data (knowledge base, tickets, demo orders). Imported by admin.py."""

from django.contrib import admin

from agents_app import services
from agents_app.models import KnowledgeArticle, Order, Ticket


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(admin.ModelAdmin):
    """Edited here, searched by the support and research agents (published articles only)."""

    list_display = ("title", "slug", "tags", "is_published", "updated_at")
    list_editable = ("is_published",)
    list_filter = ("is_published",)
    search_fields = ("title", "slug", "tags", "body")
    prepopulated_fields = {"slug": ("title",)}
    readonly_fields = ("created_at", "updated_at")


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    """Tickets are opened by the support agent; staff work them by changing their status."""

    list_display = ("number", "subject", "owner", "priority", "status", "created_at")
    list_editable = ("status",)
    list_filter = ("status", "priority", "created_at")
    search_fields = ("public_id", "subject", "description", "owner__email", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "conversation")
    readonly_fields = ("public_id", "created_at", "updated_at")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # What the user reported stays as they reported it; staff change status and priority.
        if obj is not None:
            return (*self.readonly_fields, "owner", "conversation", "subject", "description")
        return self.readonly_fields

    @admin.display(description="Ticket", ordering="public_id")
    def number(self, obj: Ticket) -> str:
        return f"#{str(obj.public_id)[:8]}"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.ticket_create(
            owner=obj.owner,
            conversation=obj.conversation,
            subject=obj.subject,
            description=obj.description,
            priority=obj.priority,
        )
        obj.pk, obj.public_id = created.pk, created.public_id


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Demo orders: what was bought is fixed; staff may move the shipping state along."""

    list_display = ("number", "owner", "status", "total", "carrier", "estimated_delivery", "created_at")
    list_filter = ("status", "carrier")
    search_fields = ("number", "owner__email", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    readonly_fields = ("created_at",)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return (*self.readonly_fields, "number", "owner", "items", "total")
        return self.readonly_fields
