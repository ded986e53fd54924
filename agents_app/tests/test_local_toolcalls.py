"""The local model's text -> function calls, and the streaming hold-back, on recorded outputs.

The fixtures are what Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, temperature 0) actually wrote
with the `<tools>` system prompt, plus the forms it is known to produce now and then.
Pure functions: no model, no database.
"""

from __future__ import annotations

import pytest

from agents_app.local.toolcalls import (
    ParsedCall,
    StopFilter,
    ToolCallStream,
    declared_parameters,
    parse_tool_calls,
)

TOOLS = {
    "get_current_time": frozenset({"timezone"}),
    "get_weather": frozenset({"city"}),
    "add": frozenset({"a", "b"}),
}

# Recorded from the model, split as it streamed them (one string per token).
RECORDED_FENCED = ["```", "json", "\n", "{\n", " ", " \"", "name", "\":", " \"", "add", "\",\n", " ", " \"", "arguments",
                   "\":", " {\n", "   ", " \"", "a", "\":", " ", "2", ".", "5", ",\n", "   ", " \"", "b", "\":", " ",
                   "4", "\n", " ", " }\n", "}\n", "```"]  # fmt: skip
RECORDED_BARE = ['{"', "name", '":', ' "', "get", "_current", "_time", '",', ' "', "arguments", '":', ' {"', "timezone",
                 '":', ' "', "UTC", '"}}']  # fmt: skip
TAGGED = '<tool_call>\n{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>'

CALL_OUTPUTS = {
    "tagged": (TAGGED, "", [ParsedCall("get_current_time", {"timezone": "Europe/Paris"})]),
    "fenced json": ("".join(RECORDED_FENCED), "", [ParsedCall("add", {"a": 2.5, "b": 4})]),
    "bare json": ("".join(RECORDED_BARE), "", [ParsedCall("get_current_time", {"timezone": "UTC"})]),
    "doubled braces, as in the template's example": (
        '<tool_call>\n{{"name": "get_weather", "arguments": {"city": "Oslo"}}}\n</tool_call>',
        "",
        [ParsedCall("get_weather", {"city": "Oslo"})],
    ),
    "doubled braces everywhere": (
        '{{"name": "add", "arguments": {{"a": 1, "b": 2}}}}',
        "",
        [ParsedCall("add", {"a": 1, "b": 2})],
    ),
    "unknown parameters dropped": (
        '{"name": "get_weather", "arguments": {"city": "Rome", "units": "metric", "days": 3}}',
        "",
        [ParsedCall("get_weather", {"city": "Rome"})],
    ),
    "text before the call": (
        "Let me look that up for you.\n" + TAGGED,
        "Let me look that up for you.",
        [ParsedCall("get_current_time", {"timezone": "Europe/Paris"})],
    ),
    "two calls in a row": (
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_current_time", "arguments": {"timezone": "Europe/Oslo"}}\n</tool_call>'
        ),
        "",
        [ParsedCall("get_weather", {"city": "Oslo"}), ParsedCall("get_current_time", {"timezone": "Europe/Oslo"})],
    ),
    "arguments given as a JSON string": (
        '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}\n</tool_call>',
        "",
        [ParsedCall("add", {"a": 1, "b": 2})],
    ),
    "'parameters' instead of 'arguments'": (
        '{"name": "get_weather", "parameters": {"city": "Lima"}}',
        "",
        [ParsedCall("get_weather", {"city": "Lima"})],
    ),
    "a bare call followed by a stray closing tag": (
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        "",
        [ParsedCall("get_weather", {"city": "Oslo"})],
    ),
    "generation ended before the closing tag": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        "",
        [ParsedCall("get_weather", {"city": "Oslo"})],
    ),
    "no-argument call": ('{"name": "get_current_time", "arguments": {}}', "", [ParsedCall("get_current_time", {})]),
}

PLAIN_OUTPUTS = {
    "braces in prose": 'In Python a dict looks like {"a": 1} and a set like {1, 2}; f-strings use {name}.',
    "a json block that is data, not a call": 'Here it is:\n```json\n{"name": "Alice", "age": 30}\n```',
    "a python block that builds a dict": '```python\nperson = {"name": "Bob"}\nprint(person)\n```\nThat prints it.',
    "html": "Use <div> and <b>bold</b>; a <toolbar> is not a <tool_call",
    "a call to a tool that does not exist": '{"name": "send_email", "arguments": {"to": "x@example.com"}}',
    "json mentioning a tool name as a value": '{"tool": "add", "why": "to sum"}',
    "inline code": "Call `add(1, 2)` or ``get_weather``.",
}


def stream_pieces(pieces: list[str]) -> tuple[list[str], ToolCallStream]:
    stream = ToolCallStream(TOOLS)
    released = [stream.feed(piece) for piece in pieces]
    released.append(stream.finish())
    return released, stream


@pytest.mark.parametrize("name", list(CALL_OUTPUTS))
def test_recorded_call_forms_become_calls_with_only_declared_parameters(name):
    raw, visible, calls = CALL_OUTPUTS[name]

    assert parse_tool_calls(raw, TOOLS) == (visible, calls)


@pytest.mark.parametrize("name", list(PLAIN_OUTPUTS))
def test_plain_text_with_braces_tags_or_fences_stays_text(name):
    raw = PLAIN_OUTPUTS[name].rstrip()

    assert parse_tool_calls(raw, TOOLS) == (raw, [])


@pytest.mark.parametrize("name", list(CALL_OUTPUTS) + list(PLAIN_OUTPUTS))
def test_streaming_one_character_at_a_time_gives_the_same_result_as_parsing_at_once(name):
    raw = CALL_OUTPUTS[name][0] if name in CALL_OUTPUTS else PLAIN_OUTPUTS[name].rstrip()

    released, stream = stream_pieces(list(raw))

    assert ("".join(released), stream.calls) == parse_tool_calls(raw, TOOLS)
    assert "".join(released) == stream.text


def test_streamed_call_never_leaks_any_of_its_json_into_the_visible_text():
    released, stream = stream_pieces(RECORDED_FENCED)

    assert released == [""] * len(released)
    assert stream.calls == [ParsedCall("add", {"a": 2.5, "b": 4})]


def test_text_before_a_call_streams_before_the_call_is_complete():
    stream = ToolCallStream(TOOLS)

    assert stream.feed("Let me check") == "Let me check"
    assert stream.feed(".\n<tool_call>\n") == "."
    assert stream.feed('{"name": "get_weather", "arguments": {"city": "Oslo"}}') == ""
    assert stream.feed("\n</tool_call>") == ""
    assert stream.finish() == ""
    assert stream.text == "Let me check."
    assert stream.calls == [ParsedCall("get_weather", {"city": "Oslo"})]


def test_partial_tool_prefix_is_held_back_then_released_when_it_is_not_a_call():
    stream = ToolCallStream(TOOLS)

    assert stream.feed("Compare a <tool") == "Compare a"
    assert stream.feed("bar> with") == " <toolbar> with"
    assert stream.feed(" a menu.") == " a menu."
    assert stream.finish() == ""
    assert stream.calls == []


def test_brace_is_held_only_until_it_cannot_become_a_known_call():
    stream = ToolCallStream(TOOLS)

    assert stream.feed("Result: {") == "Result:"
    assert stream.feed('"na') == ""  # may still become {"name": ...
    assert stream.feed('me": "ge') == ""  # "ge" may become get_weather
    assert stream.feed('orge"}') == ' {"name": "george"}'  # not a tool: released at once


def test_fence_is_released_as_soon_as_its_language_is_not_json():
    stream = ToolCallStream(TOOLS)

    assert stream.feed("Code:\n``") == "Code:"
    assert stream.feed("`py") == "\n```py"
    # A fence at the very end may open a json block: held until the next piece says.
    assert stream.feed("thon\nprint(1)\n```") == "thon\nprint(1)"
    assert stream.feed("\nDone.") == "\n```\nDone."


def test_text_after_a_call_is_separated_from_text_before_it():
    text, calls = parse_tool_calls('First.\n{"name": "add", "arguments": {"a": 1, "b": 2}}\nThen more.', TOOLS)

    assert text == "First.\n\nThen more."
    assert calls == [ParsedCall("add", {"a": 1, "b": 2})]


def test_a_call_tag_with_broken_json_is_shown_as_text_not_called():
    raw = '<tool_call>\n{"name": "add", "arguments": {"a": 1,,}}\n</tool_call>'

    assert parse_tool_calls(raw, TOOLS) == (raw, [])


def test_without_tools_nothing_is_held_or_called():
    plain = ToolCallStream({})

    assert plain.feed("".join(RECORDED_BARE)) == "".join(RECORDED_BARE)
    assert plain.calls == []


def test_declared_parameters_come_from_the_json_schema():
    strict = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}

    assert declared_parameters(strict) == frozenset({"city"})
    assert declared_parameters({"type": "object", "properties": {}, "additionalProperties": False}) == frozenset()
    assert declared_parameters({"type": "object"}) is None  # accepts anything


def test_stop_filter_cuts_at_a_stop_sequence_split_across_pieces():
    stops = StopFilter(("<tool_response>", "<|im_end|>"))

    assert stops.feed("The answer is 4.\n<tool_") == "The answer is 4.\n"
    assert stops.feed("response>\n4") == ""
    assert stops.stopped
    assert stops.finish() == ""


def test_stop_filter_releases_a_held_prefix_that_did_not_become_a_stop():
    stops = StopFilter(("<tool_response>",))

    assert stops.feed("a <tool") == "a "
    assert stops.feed("box>") == "<toolbox>"
    assert stops.feed(" b <") == " b "
    assert stops.finish() == "<"
