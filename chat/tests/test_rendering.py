"""Model output is untrusted: Markdown renders with highlighted code, and nothing but what the
Markdown renderer and the highlighter emit survives the sanitiser."""

import re
from html.parser import HTMLParser

import pytest
from django.core.management import call_command

from chat.rendering import render_markdown, sanitise


def test_fenced_code_is_highlighted_on_the_server_with_a_language_class():
    html = render_markdown("```python\ndef f(x):\n    return x  # done\n```")

    assert html.startswith('<pre class="highlight"><code class="language-python">')
    assert '<span class="k">def</span>' in html and '<span class="c1"># done</span>' in html


def test_language_aliases_are_normalised_and_unknown_languages_stay_plain():
    assert 'class="language-python"' in render_markdown("```py\nx = 1\n```")
    plain = render_markdown("```klingon\n<b>x</b>\n```")
    assert plain == '<pre class="highlight"><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>\n'


def test_tables_align_with_classes_not_style_attributes():
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")

    assert 'class="align-left"' in html and 'class="align-center"' in html and 'class="align-right"' in html
    assert "style=" not in html


def test_single_newlines_in_a_reply_are_line_breaks():
    assert render_markdown("one\ntwo") == "<p>one<br>\ntwo</p>\n"


@pytest.mark.parametrize(
    "attack",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        '<span class="k" onclick="alert(1)" style="color:red">x</span>',
        '<pre class="highlight evil"><code class="language-python" data-x="1">x</code></pre>',
        "<iframe src='https://example.com'></iframe>",
        '<a href="javascript:alert(1)">x</a>',
        "[x](javascript:alert(1))",
        '```python" onmouseover="alert(1)\nx\n```',
        "```html\n<script>alert(1)</script>\n```",
        '<svg><use href="#x"/></svg><style>body{display:none}</style>',
        '<form action="/c/new/"><button>go</button></form>',
    ],
)
def test_model_output_cannot_smuggle_tags_or_attributes(attack):
    # Through Markdown (raw HTML is escaped there), and straight into the sanitiser, the second
    # line of defence, which must strip it by itself.
    _assert_only_allowed(render_markdown(attack))
    _assert_only_allowed(sanitise(attack))


def test_the_sanitiser_keeps_exactly_what_the_highlighter_emits():
    highlighted = render_markdown("```python\nprint('hi')  # x\n```")
    assert sanitise(highlighted) == highlighted
    assert sanitise('<span class="k evil">x</span><code class="language-python hack">y</code>') == (
        '<span class="k">x</span><code class="language-python">y</code>'
    )


def _elements(html: str) -> list[tuple[str, dict[str, str]]]:
    """Every element a browser would build from `html`: (tag, attributes)."""
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collect().feed(html)
    return found


ALLOWED_ATTRIBUTES = {"a": {"href", "title", "rel"}, "ol": {"start"}, "span": {"class"}, "pre": {"class"},
                      "code": {"class"}, "th": {"class"}, "td": {"class"}}


def _assert_only_allowed(html: str) -> None:
    for tag, attrs in _elements(html):
        assert tag in {"p", "pre", "code", "span", "a", "br", "ul", "li"}, html
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, set()), html
        if "href" in attrs:
            assert attrs["href"].startswith(("http:", "https:", "mailto:")), html
        if "class" in attrs:
            assert attrs["class"] == "highlight" or re.fullmatch(r"language-[\w+#.-]+|[a-z0-9]{1,3}", attrs["class"]), html


def test_only_highlighter_classes_survive_on_spans():
    html = render_markdown('Text <span class="k">x</span>')
    assert "<span" not in html  # raw HTML is never rendered: it is escaped text
    assert "&lt;span" in html


def test_the_committed_pygments_stylesheet_is_up_to_date():
    # Fails after a Pygments upgrade or a style change: run `manage.py pygments_css`.
    call_command("pygments_css", "--check")
