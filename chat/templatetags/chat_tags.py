from decimal import Decimal

from django import template
from django.utils.safestring import mark_safe

from chat.rendering import render_card, render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> str:
    """Model output rendered as sanitised HTML (see chat.rendering)."""
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitised by nh3


@register.filter
def card(structured: dict | None) -> str:
    """A structured final output as a card (escaped; see chat.rendering.render_card)."""
    return mark_safe(render_card(structured))  # noqa: S308


@register.filter
def usd(amount: Decimal | None) -> str:
    if amount is None:
        return "cost unknown"
    if amount == 0:
        return "$0"
    if amount < Decimal("0.01"):
        return f"${amount:.6f}".rstrip("0")
    return f"${amount:.4f}"


@register.filter
def pretty_arguments(arguments) -> str:
    import json

    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)
