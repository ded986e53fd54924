"""Usage and budget bits for templates: `{% quota_for user as quota %}`, `{{ row|cost_total }}`,
`{{ message.cost|usd }}`, `{{ row|extra_value:name }}`."""

from django import template

from usage import formatting, quotas
from usage.selectors import UsageRow

register = template.Library()

register.filter("usd", formatting.usd)


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
def extra_value(row: UsageRow | None, name: str) -> int:
    """A column another app added to the report (`usage.columns`), 0 when absent."""
    return 0 if row is None else row.extra.get(name, 0)


@register.filter
def reset_time(moment) -> str:
    return quotas.clock(moment)
