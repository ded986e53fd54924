"""Usage and budget bits for templates: `{% quota_for user as quota %}`, `{{ row|cost_total }}`."""

from django import template
from django.utils import timezone

from chat import quotas
from chat.usage import UsageRow

register = template.Library()


@register.simple_tag
def quota_for(user) -> quotas.QuotaStatus | None:
    """Today's budget of a signed-in user (None for anonymous visitors)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return quotas.quota_status(user=user)


@register.filter
def cost_total(row: UsageRow | None) -> str:
    """A summed cost that admits unknown parts: '$0.01', '≥ $0.01, some costs unknown'."""
    return "$0" if row is None else row.cost_display


@register.filter
def reset_time(moment) -> str:
    local = timezone.localtime(moment)
    return f"{local:%H:%M} {local.tzname()}"
