"""Turning the local model's text into function calls, while streaming (pure, no llama).

Qwen2.5 writes calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, but a
small model also writes them as a fenced ```json block, as bare `{"name": ..., "arguments":
...}`, and with the doubled braces `{{...}}` it saw in the template. Only a call to a tool
that exists counts; its arguments keep only the parameters the tool declares.

`ToolCallStream` is fed the generated text piece by piece and returns the text that is safe
to show now: text is held back only while it may still be the start of a call (a partial
`<tool`, a fence whose info string may be json, a `{` that may become `{"name": "<tool>"`),
and released as soon as it turns out not to be one. What it released, joined, is exactly
the final visible text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
FENCE = "```"
FENCE_INFOS = ("", "json", "json5", "tool_call", "tool_code")
NAME_PREFIXES = ("", "functions.")  # some outputs qualify the name like an OpenAI call
_CANDIDATE = re.compile(r"[<`{]")
_PENDING, _TEXT, _CALL = "pending", "text", "call"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def declared_parameters(schema: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The parameter names a JSON schema declares; None when it accepts anything."""
    if not schema:
        return None
    properties = schema.get("properties")
    if properties is None:
        return None if schema.get("additionalProperties", True) is not False else frozenset()
    return frozenset(properties)


# --- parsing one complete candidate -----------------------------------------------------


def match_braces(text: str, start: int) -> int | None:
    """Index just past the `}` that closes the `{` at `start` (JSON strings respected)."""
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _loads_object(text: str) -> Any:
    """json.loads, tolerating the template's doubled braces."""
    candidates = [text]
    if text.startswith("{{") and text.endswith("}}"):
        candidates.append(text[1:-1])
    candidates.append(text.replace("{{", "{").replace("}}", "}"))
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


class CallParser:
    def __init__(self, tools: Mapping[str, frozenset[str] | None]) -> None:
        self.tools = dict(tools)

    def tool_name(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        for prefix in NAME_PREFIXES:
            if name.startswith(prefix) and name[len(prefix) :] in self.tools:
                return name[len(prefix) :]
        return None

    def may_become_name(self, partial: str) -> bool:
        return any((prefix + name).startswith(partial) for name in self.tools for prefix in NAME_PREFIXES)

    def to_call(self, obj: Any) -> ParsedCall | None:
        if not isinstance(obj, dict):
            return None
        if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
            return self.to_call(obj["function"])
        name = self.tool_name(obj.get("name"))
        if name is None:
            return None
        arguments = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads_object(arguments) if arguments.strip() else {}
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return None
        declared = self.tools[name]
        if declared is not None:
            arguments = {key: value for key, value in arguments.items() if key in declared}
        return ParsedCall(name=name, arguments=arguments)

    def parse_body(self, body: str) -> list[ParsedCall] | None:
        """Calls in the body of a `<tool_call>` tag or a fence: one or more JSON objects
        (or a JSON list of them). None unless every object is a call to a known tool."""
        body = body.strip()
        if body.startswith(FENCE):
            body = body[len(FENCE) :].split("\n", 1)[-1] if "\n" in body else ""
            body = body.rsplit(FENCE, 1)[0].strip()
        if body.startswith(OPEN_TAG):
            body = body[len(OPEN_TAG) :].split(CLOSE_TAG, 1)[0].strip()
        if body.startswith("["):
            try:
                objects = json.loads(body)
            except ValueError:
                return None
            calls = [self.to_call(obj) for obj in objects] if isinstance(objects, list) else [None]
            return calls if calls and all(calls) else None  # type: ignore[return-value]
        calls: list[ParsedCall] = []
        pos = 0
        while pos < len(body):
            if body[pos] in " \t\r\n,":
                pos += 1
                continue
            if body[pos] != "{":
                return None
            end = match_braces(body, pos)
            if end is None:
                return None
            call = self.to_call(_loads_object(body[pos:end]))
            if call is None:
                return None
            calls.append(call)
            pos = end
        return calls or None

    def call_head(self, text: str) -> str:
        """For text starting with `{`: "yes" if it starts `{"name": "<known tool>"`, "maybe"
        while it could still become that, else "no". Doubled `{{` is accepted."""
        i = 2 if text.startswith("{{") else 1
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        key = '"name"'
        segment = text[i : i + len(key)]
        if not key.startswith(segment):
            return "no"
        if len(segment) < len(key):
            return "maybe"
        i += len(key)
        for expected in (":", '"'):
            while i < len(text) and text[i] in " \t\r\n":
                i += 1
            if i >= len(text):
                return "maybe"
            if text[i] != expected:
                return "no"
            i += 1
        end = text.find('"', i)
        if end == -1:
            return "maybe" if self.may_become_name(text[i:]) else "no"
        return "yes" if self.tool_name(text[i:end]) else "no"


# --- streaming ---------------------------------------------------------------------------


@dataclass
class ToolCallStream:
    """Feed generated text; get back the text that is safe to show; read `calls` at the end.

    Whitespace next to a call is dropped, and text that follows a call is separated from
    the text before it by a blank line. Trailing whitespace is held until more text follows.
    """

    tools: Mapping[str, frozenset[str] | None]
    buffer: str = ""
    calls: list[ParsedCall] = field(default_factory=list)
    text: str = ""
    _pos: int = 0
    _held_space: str = ""
    _after_call: bool = False
    _shown_any: bool = False
    _finished: bool = False

    def __post_init__(self) -> None:
        self._parser = CallParser(self.tools)

    def feed(self, piece: str) -> str:
        if self._finished:
            raise RuntimeError("ToolCallStream already finished")
        self.buffer += piece
        return self._advance(final=False)

    def finish(self) -> str:
        """Decide everything still held back; trailing whitespace is dropped."""
        released = self._advance(final=True)
        self._finished = True
        self._held_space = ""
        return released

    # internals

    def _advance(self, *, final: bool) -> str:
        released: list[str] = []
        buffer = self.buffer
        while self._pos < len(buffer):
            match = _CANDIDATE.search(buffer, self._pos)
            stop = match.start() if match else len(buffer)
            if stop > self._pos:
                released.append(self._show(buffer[self._pos : stop]))
                self._pos = stop
            if match is None:
                break
            kind, end, calls = self._classify(match.start(), final)
            if kind == _PENDING:
                break
            if kind == _CALL:
                self.calls.extend(calls)
                self._held_space = ""
                self._after_call = True
            else:
                released.append(self._show(buffer[self._pos : end]))
            self._pos = end
        out = "".join(released)
        self.text += out
        return out

    def _show(self, segment: str) -> str:
        body = segment.rstrip()
        trailing = segment[len(body) :]
        if not body:
            self._held_space += segment
            return ""
        if not self._shown_any:
            lead = (self._held_space + body).lstrip()
        elif self._after_call:
            lead = "\n\n" + (self._held_space + body).lstrip()
        else:
            lead = self._held_space + body
        self._held_space = trailing
        self._after_call = False
        self._shown_any = True
        return lead

    def _classify(self, start: int, final: bool) -> tuple[str, int, list[ParsedCall]]:
        char = self.buffer[start]
        if char == "<":
            return self._classify_tag(start, final)
        if char == "`":
            return self._classify_fence(start, final)
        return self._classify_json(start, final)

    def _classify_tag(self, start: int, final: bool) -> tuple[str, int, list[ParsedCall]]:
        rest = self.buffer[start:]
        if not rest.startswith(OPEN_TAG):
            if self._after_call and rest.startswith(CLOSE_TAG):  # a stray closing tag after a bare call
                return _CALL, start + len(CLOSE_TAG), []
            if not final and (OPEN_TAG.startswith(rest) or (self._after_call and CLOSE_TAG.startswith(rest))):
                return _PENDING, start, []
            return _TEXT, start + 1, []
        body_start = start + len(OPEN_TAG)
        close = self.buffer.find(CLOSE_TAG, body_start)
        if close == -1:
            if not final:
                return _PENDING, start, []
            body, end = self.buffer[body_start:], len(self.buffer)  # the model stopped before closing
        else:
            body, end = self.buffer[body_start:close], close + len(CLOSE_TAG)
        calls = self._parser.parse_body(body)
        if calls is None and close == -1:
            calls = self._lenient(body)
        return (_CALL, end, calls) if calls else (_TEXT, end, [])

    def _classify_fence(self, start: int, final: bool) -> tuple[str, int, list[ParsedCall]]:
        rest = self.buffer[start:]
        if not rest.startswith(FENCE):
            if not final and FENCE.startswith(rest):
                return _PENDING, start, []
            return _TEXT, start + 1, []
        newline = self.buffer.find("\n", start + len(FENCE))
        info_end = newline if newline != -1 else len(self.buffer)
        info = self.buffer[start + len(FENCE) : info_end].strip().lower()
        if newline == -1:
            if not final and any(candidate.startswith(info) for candidate in FENCE_INFOS):
                return _PENDING, start, []
            return _TEXT, start + len(FENCE), []
        if info not in FENCE_INFOS:
            return _TEXT, start + len(FENCE), []
        close = self.buffer.find(FENCE, newline + 1)
        content = self.buffer[newline + 1 : close if close != -1 else len(self.buffer)]
        stripped = content.lstrip()
        if not stripped:
            return (_PENDING, start, []) if close == -1 and not final else (_TEXT, start + len(FENCE), [])
        if stripped[0] == "<":
            if not (stripped.startswith(OPEN_TAG) or OPEN_TAG.startswith(stripped)):
                return _TEXT, start + len(FENCE), []
        elif stripped[0] != "{" or self._parser.call_head(stripped) == "no":
            return _TEXT, start + len(FENCE), []
        if close == -1:
            if not final:
                return _PENDING, start, []
            calls = self._parser.parse_body(content) or self._lenient(content)
            return (_CALL, len(self.buffer), calls) if calls else (_TEXT, start + len(FENCE), [])
        calls = self._parser.parse_body(content)
        return (_CALL, close + len(FENCE), calls) if calls else (_TEXT, start + len(FENCE), [])

    def _classify_json(self, start: int, final: bool) -> tuple[str, int, list[ParsedCall]]:
        rest = self.buffer[start:]
        head = self._parser.call_head(rest)
        if head == "no" or (head == "maybe" and final):
            return _TEXT, start + 1, []
        if head == "maybe":
            return _PENDING, start, []
        end = match_braces(self.buffer, start)
        if end is None:
            if not final:
                return _PENDING, start, []
            calls = self._lenient(rest)
            return (_CALL, len(self.buffer), calls) if calls else (_TEXT, start + 1, [])
        call = self._parser.to_call(_loads_object(self.buffer[start:end]))
        return (_CALL, end, [call]) if call else (_TEXT, start + 1, [])

    def _lenient(self, text: str) -> list[ParsedCall] | None:
        """At the end of generation: a call the model did not finish closing
        (a missing `}` or a doubled `{{` closed by single braces)."""
        text = text.strip()
        if not text.startswith("{"):
            return None
        for extra in range(1, 3):
            calls = self._parser.parse_body(text + "}" * extra)
            if calls:
                return calls
        return None


def parse_tool_calls(text: str, tools: Mapping[str, frozenset[str] | None]) -> tuple[str, list[ParsedCall]]:
    """Visible text and calls of a complete model output."""
    stream = ToolCallStream(tools)
    stream.feed(text)
    stream.finish()
    return stream.text, stream.calls


# --- stop sequences ---------------------------------------------------------------------


@dataclass
class StopFilter:
    """Cut generated text at the first stop sequence, holding back a possible partial one."""

    stops: tuple[str, ...]
    _held: str = ""
    stopped: bool = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:length]):
                    keep = max(keep, length)
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
