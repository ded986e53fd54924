from django import template
from django.utils.safestring import mark_safe

from chat.rendering import render_card, render_markdown
from usage.formatting import usd

register = template.Library()


@register.filter
def markdown(text: str) -> str:
    """Model output rendered as sanitised HTML (see chat.rendering)."""
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitised by nh3


@register.filter
def card(structured: dict | None) -> str:
    """A structured final output as a card (escaped; see chat.rendering.render_card)."""
    return mark_safe(render_card(structured))  # noqa: S308


# A reply's cost, as everywhere else (`usage.formatting`).
register.filter("usd", usd)


@register.filter
def pretty_arguments(arguments) -> str:
    import json

    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


@register.filter
def agent_title(agent_key: str) -> str:
    """The title users picked the agent by (its key if the agent is gone)."""
    from agents_app.registry import all_specs

    return next((spec.title for spec in all_specs() if spec.key == agent_key), agent_key)


@register.inclusion_tag("chat/_icon.html")
def icon(name: str) -> dict:
    """An icon from static/chat/icons.svg, hidden from screen readers (its button has a label)."""
    return {"name": name}
