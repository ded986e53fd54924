"""The user admin with the user's profile (daily token budget) inline."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import ApiToken, Profile, UsageRecord
from accounts.services import api_token_revoke
from chat import quotas

User = get_user_model()


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    extra = 1
    max_num = 1
    fields = ("daily_token_budget", "used_today")
    readonly_fields = ("used_today",)
    verbose_name_plural = "Profile"

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "daily_token_budget":
            field.help_text = "Tokens per day for this user. Empty: the site default; 0: unlimited."
        return field

    @admin.display(description="Used today")
    def used_today(self, obj) -> str:
        if obj is None or not obj.pk:
            return "—"
        status = quotas.quota_status(user=obj.user)
        if status.unlimited:
            return f"{quotas.tokens_used_today(user=obj.user):,} tokens (no limit)"
        return f"{status.used:,} of {status.budget:,} tokens"


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    inlines = [*BaseUserAdmin.inlines, ProfileInline]
    list_display = (*BaseUserAdmin.list_display, "daily_budget")
    list_select_related = ("profile",)

    @admin.display(description="Daily tokens")
    def daily_budget(self, obj) -> str:
        profile = getattr(obj, "profile", None)
        if profile is None or profile.daily_token_budget is None:
            return "default"
        return "unlimited" if profile.daily_token_budget == 0 else f"{profile.daily_token_budget:,}"


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The usage ledger: one row per run, kept when replies or conversations are deleted."""

    list_display = ("created_at", "user", "agent_key", "model", "requests", "total_tokens", "cost_usd", "conversation", "run")
    list_filter = ("agent_key", "model", "created_at")
    list_select_related = ("user", "conversation", "run")
    date_hierarchy = "created_at"
    search_fields = ("user__email", "conversation__title", "run__public_id")
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # accounting: spent tokens do not come back

    @admin.display(description="Cost (USD)", ordering="cost")
    def cost_usd(self, obj) -> str:
        from chat.usage import format_cost

        if obj.cost is None:
            return "unknown" if obj.total_tokens else "—"
        return format_cost(obj.cost)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only: staff see who holds which token and can revoke one, never create or read a
    secret (only its hash is stored, and it is not shown)."""

    list_display = ("name", "owner", "display_prefix", "created_at", "last_used_at", "expires_at", "state")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at", "last_used_at")
    list_select_related = ("owner",)
    search_fields = ("name", "prefix", "owner__email")
    raw_id_fields = ("owner",)
    fields = ("name", "owner", "display_prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke_tokens"]

    def has_add_permission(self, request) -> bool:
        return False  # the secret is shown to the user who creates it, on their own page

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the row says who used what, and when

    @admin.display(description="Token")
    def display_prefix(self, obj) -> str:
        return obj.display_prefix

    @admin.display(description="State")
    def state(self, obj) -> str:
        return "revoked" if obj.is_revoked else "expired" if obj.is_expired else "active"

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            api_token_revoke(token=token)
        self.message_user(request, f"Revoked {len(tokens)} token{'s' if len(tokens) != 1 else ''}.")
