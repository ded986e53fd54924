"""Usage in admin: the ledger (read-only), model prices, per-user budgets on the user page, and
the usage report (by user, agent, day or model, with totals and CSV) at
`admin/usage/usagerecord/report/`, linked from the admin index."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, QueryDict
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from accounts.admin import UserAdmin
from config.durations import parse_duration
from usage import quotas
from usage.columns import add_extra_values, extra_columns
from usage.formatting import format_cost
from usage.models import ModelPrice, TokenBudget, UsageRecord
from usage.reports import to_csv
from usage.selectors import GROUPINGS, usage_by, usage_records, usage_totals

User = get_user_model()


def can_review_usage(request) -> bool:
    """Usage reveals what every user spent: staff with the right to view messages only."""
    return request.user.is_active and request.user.is_staff and request.user.has_perm("chat.view_message")


# --- The budget on the user's admin page ---------------------------------------------
class TokenBudgetInline(admin.StackedInline):
    model = TokenBudget
    can_delete = False
    extra = 1
    max_num = 1
    fields = ("daily_token_budget", "used_today")
    readonly_fields = ("used_today",)
    verbose_name_plural = "Token budget"

    @admin.display(description="Used today")
    def used_today(self, obj) -> str:
        if obj is None or not obj.pk:
            return "—"
        status = quotas.quota_status(user=obj.user)
        if status.unlimited:
            return f"{quotas.tokens_used_today(user=obj.user):,} tokens (no limit)"
        return f"{status.used:,} of {status.budget:,} tokens"


class UserWithBudgetAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, TokenBudgetInline]
    list_display = (*UserAdmin.list_display, "daily_budget")
    list_select_related = ("token_budget",)

    @admin.display(description="Daily tokens")
    def daily_budget(self, obj) -> str:
        budget = getattr(obj, "token_budget", None)
        if budget is None or budget.daily_token_budget is None:
            return "default"
        return "unlimited" if budget.daily_token_budget == 0 else f"{budget.daily_token_budget:,}"


admin.site.unregister(User)
admin.site.register(User, UserWithBudgetAdmin)


# --- The ledger and the report ---------------------------------------------------------
@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The usage ledger: one row per run, kept when replies or conversations are deleted."""

    list_display = ("created_at", "user", "agent_key", "model", "requests", "total_tokens", "estimated", "cost_usd", "conversation", "run")
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
        if obj.cost is None:
            return "unknown" if obj.total_tokens else "—"
        return format_cost(obj.cost)

    def get_urls(self):
        return [
            path("report/", self.admin_site.admin_view(self.report_view), name="usage_report"),
            *super().get_urls(),
        ]

    def report_view(self, request):
        if not can_review_usage(request):
            raise PermissionDenied
        query = request.GET.copy() if request.GET else QueryDict(mutable=True)
        for name, value in UsageReportForm.defaults().items():
            query.setdefault(name, value)
        form = UsageReportForm(query)
        report = form.report() if form.is_valid() else {"rows": [], "total": None, "by": "", "since": None}
        report["extra_columns"] = extra_columns()
        if query.get("format") == "csv":
            if not form.is_valid():
                return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain; charset=utf-8")
            response = HttpResponse(
                to_csv(report["rows"], by=report["by"], total=report["total"]), content_type="text/csv; charset=utf-8"
            )
            filename = f"usage-by-{report['by']}-{timezone.localdate():%Y%m%d}.csv"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        query["format"] = "csv"
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage report",
            "opts": self.model._meta,
            "form": form,
            "csv_url": f"?{query.urlencode()}",
            **report,
        }
        return TemplateResponse(request, "admin/usage/usage_report.html", context)


class UsageReportForm(forms.Form):
    since = forms.CharField(initial="7d", help_text="e.g. 24h, 7d, 4w", max_length=12)
    by = forms.ChoiceField(choices=[(g, g) for g in GROUPINGS if g != "conversation"], initial="user")
    user = forms.CharField(required=False, help_text="Only this user (email).", max_length=254)
    agent = forms.CharField(required=False, help_text="Only this agent (key).", max_length=64)

    @staticmethod
    def defaults() -> dict[str, str]:
        return {"since": "7d", "by": "user"}

    def clean_since(self) -> timedelta:
        try:
            return parse_duration(self.cleaned_data["since"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_user(self):
        email = self.cleaned_data.get("user")
        if not email:
            return None
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise forms.ValidationError(f"No user {email!r}.")
        return user

    def report(self) -> dict[str, Any]:
        since = timezone.now() - self.cleaned_data["since"]
        records = usage_records(since=since, user=self.cleaned_data["user"], agent=self.cleaned_data["agent"] or None)
        by = self.cleaned_data["by"]
        rows, total = usage_by(records, by=by), usage_totals(records)
        add_extra_values(rows, total, records=records, by=by)  # e.g. thumbs up/down (chat)
        return {"rows": rows, "total": total, "by": by, "since": since}


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input_per_million", "cached_input_per_million", "output_per_million", "settings_price", "updated_at")
    search_fields = ("model",)
    change_list_template = "admin/usage/modelprice/change_list.html"

    @admin.display(description="Price in settings (in / cached / out)")
    def settings_price(self, obj) -> str:
        prices = settings.AGENTS_PRICING.get(obj.model)
        if not prices:
            return "—"
        return f"{prices['input']} / {prices.get('cached_input', prices['input'])} / {prices['output']}"
