"""Users and API tokens in admin."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm

from accounts.models import ApiToken
from accounts.services import api_token_revoke, api_tokens_revoke_all

User = get_user_model()


if admin.site.is_registered(User):
    admin.site.unregister(User)


class PasswordChangeRevokingTokensForm(AdminPasswordChangeForm):
    """Staff setting a user's password (e.g. after a compromise) revoke the user's API tokens,
    like a change or reset through the account pages does (`accounts.signals`)."""

    def save(self, commit: bool = True):
        user = super().save(commit=commit)
        if commit:
            api_tokens_revoke_all(owner=user, reason="password_changed")
        return user


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Django's user admin; `usage.admin` adds the daily token budget to it."""

    change_password_form = PasswordChangeRevokingTokensForm


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
