"""Model output is untrusted: Markdown is rendered with raw HTML disabled, then sanitised."""

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

_ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "a", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}


def render_markdown(text: str) -> str:
    html = _markdown.render(text or "")
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}, "th": {"style"}, "td": {"style"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def _generic(value) -> str:
    from django.utils.html import format_html, format_html_join

    if isinstance(value, dict):
        rows = format_html_join("", "<dt>{}</dt><dd>{}</dd>", ((k.replace("_", " ").capitalize(), _generic(v)) for k, v in value.items()))
        return format_html("<dl>{}</dl>", rows)
    if isinstance(value, list):
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((_generic(v),) for v in value)))
    return format_html("{}", "" if value is None else value)


def render_card(structured: dict | None) -> str:
    """HTML for a structured final output: `templates/chat/cards/<type>.html` when the output
    type has one, else a generic, fully escaped definition list."""
    from django.template import TemplateDoesNotExist
    from django.template.loader import get_template

    if not structured:
        return ""
    try:
        template = get_template(f"chat/cards/{structured['type']}.html")
    except TemplateDoesNotExist:
        return str(_generic(structured.get("data")))
    return template.render({"data": structured.get("data"), "type": structured["type"]})
