"""What the local model may write, as a llama.cpp grammar (GBNF).

`OutputConstraint` is decided per request by `LocalModel.prepare` (pure data, so the adapter is
testable on a fake backend); `to_gbnf` turns it into the grammar the backend samples with.

With tools offered, the output is exactly one of:

- a call (up to three with `parallel_tool_calls`), each `{"name": "<offered tool>",
  "arguments": {...}}` in `<tool_call>` tags or bare, with arguments that match that tool's
  JSON schema (llama.cpp's own JSON-schema converter writes those rules), and nothing after;
- a final answer: the agent's structured output (JSON matching its schema), or plain text that
  starts with a visible character other than `<`, `{` (or, with tools on offer, a fence) and
  never contains `<tool`, so no `<tool_call>`, `<tools>` or `<tool_response>` markup can reach
  the user; with tools on offer it cannot name one of them either (a small model describes the
  call it should make), and no answer is the model's canned refusal (see `CANNED`).

`tool_choice="required"` (or a named tool) leaves out the answer; `"none"` leaves out the
calls. Malformed calls, unknown tools, missing arguments and markup-only replies cannot be
generated at all, and an empty reply neither: the answer needs at least one character.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

JSON_SPACE = r'| " " | "\n" [ \t]{0,16}'
MAX_CALLS = 3  # calls in one reply when parallel calls are allowed (the translator may need two)


@dataclass(frozen=True)
class ToolGrammar:
    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class OutputConstraint:
    calls: tuple[ToolGrammar, ...] = ()  # tools that may be called; () = none
    text: bool = True  # a plain-text final answer is allowed
    output_schema: dict[str, Any] | None = None  # the structured final answer, if the agent has one
    max_calls: int = 1  # MAX_CALLS with ModelSettings(parallel_tool_calls=True)

    @property
    def answer_allowed(self) -> bool:
        return self.text or self.output_schema is not None

    @property
    def calls_only(self) -> bool:
        return bool(self.calls) and not self.answer_allowed

    def forced_prefix(self) -> str:
        """What an output that must be a call starts with, whichever call it is."""
        if not self.calls_only:
            return ""
        if len(self.calls) == 1:
            return '<tool_call>\n{"name": "' + self.calls[0].name + '", "arguments": '
        return '<tool_call>\n{"name": "'

    def describe(self) -> dict[str, Any]:
        """For traces and logs."""
        return {
            "calls": [tool.name for tool in self.calls],
            "text": self.text and self.output_schema is None,
            "structured": self.output_schema is not None,
        }


def _char(c: str) -> str:
    """A character inside a GBNF character class."""
    return {"\\": "\\\\", "]": "\\]", "[": "\\[", "^": "\\^", "-": "\\-", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, c)


def text_without(forbidden: list[str], *, name: str = "text", first_excluded: str = "") -> dict[str, str]:
    """Rules for text that contains none of the `forbidden` strings, and whose first character
    is visible and not in `first_excluded`: an Aho–Corasick automaton over the forbidden
    strings, one rule per state (a state is the longest suffix read so far that may still
    become one of them). Every state may end, so the model can stop at any point."""
    prefixes = sorted({word[:i] for word in forbidden for i in range(len(word))}, key=len)
    alphabet = sorted({c for word in forbidden for c in word})

    def step(state: str, c: str) -> str | None:
        read = state + c
        if any(word in read for word in forbidden):
            return None  # a forbidden string would be complete: no such transition
        return next(read[i:] for i in range(len(read) + 1) if read[i:] in prefixes or i == len(read))

    rule = {prefix: f"{name}-{index}" for index, prefix in enumerate(prefixes)}

    def alternatives(state: str, excluded: str = "") -> list[str]:
        """Characters grouped by the state they lead to; all others return to the start."""
        targets: dict[str, list[str]] = {}
        special = set(excluded)
        for c in alphabet:
            if c in excluded:
                continue
            nxt = step(state, c)
            if nxt is None:
                special.add(c)
            elif nxt != "":
                targets.setdefault(nxt, []).append(c)
                special.add(c)
        out = [f"[{''.join(_char(c) for c in chars)}] {rule[nxt]}" for nxt, chars in targets.items()]
        out.append(f"[^{''.join(_char(c) for c in sorted(special))}] {rule['']}")
        return out

    rules = {rule[prefix]: "( " + " | ".join(alternatives(prefix)) + " )?" for prefix in prefixes}
    # The first character: visible, not excluded, and the automaton started on it.
    rules[name] = " | ".join(alternatives("", first_excluded + " \t\r\n"))
    return rules


# No tool-call markup in an answer, ever; nor Qwen2.5-Coder's canned refusal, which it gives
# instead of answering from a tool result it was handed ("I'm sorry, but I can't assist with
# that."): it then writes the answer, or at least a refusal that says why.
MARKUP = ["<tool"]
CANNED = ["I'm sorry, but I can't assist with that", "I'm sorry, but I can't help with that"]


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def to_gbnf(constraint: OutputConstraint) -> str:
    """The grammar for `constraint`. Needs llama-cpp-python (its JSON-schema converter)."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    rules: dict[str, str] = {}
    branches: list[str] = []

    if constraint.calls:
        alternatives = []
        for index, tool in enumerate(constraint.calls):
            schema = converter.resolve_refs(tool.parameters or {"type": "object"}, f"tool{index}")
            arguments = converter.visit(schema, f"args{index}")
            head = _literal('{"name": "' + tool.name + '", "arguments": ')
            rules[f"call{index}"] = f'{head} {arguments} "}}"'
            alternatives.append(f"call{index}")
        rules["call"] = " | ".join(alternatives)
        # Also bare, as Qwen2.5 likes to write a call without its tags (an answer cannot start
        # with "{", so a bare object is always a call).
        rules["call-block"] = r'"<tool_call>\n" call "\n</tool_call>" | call'
        extra = max(0, constraint.max_calls - 1)
        rules["calls"] = f'call-block ( "\\n" call-block ){{0,{extra}}}' if extra else "call-block"
        branches.append("calls")

    if constraint.output_schema is not None:
        schema = converter.resolve_refs(constraint.output_schema, "output")
        branches.append(converter.visit(schema, "answer"))
    elif constraint.text:
        if constraint.calls:
            # A small model that means to call a tool but gets the format wrong writes the call
            # as a fenced JSON block, or describes it ("use the `get_current_date` function"):
            # with calls on offer, an answer can do neither (nor open with "{" or a fence), and
            # never names a tool.
            names = [tool.name for tool in constraint.calls]
            rules.update(text_without([*MARKUP, *CANNED, "```json\n{", *names], first_excluded="<{`"))
        else:
            rules.update(text_without([*MARKUP, *CANNED], first_excluded="<{"))
        branches.append("text")

    if not branches:
        raise ValueError("An output constraint must allow calls or an answer.")
    # JSON as the model likes to write it (a newline and indentation between members), not
    # only on one line: a grammar that fights the model's formatting costs slow full scans.
    converter._rules["space"] = JSON_SPACE
    generated = converter.format_grammar()
    own = "\n".join(f"{name} ::= {rule}" for name, rule in rules.items())
    return f"root ::= {' | '.join(branches)}\n{own}\n{generated}\n"


@dataclass
class GrammarCache:
    """Grammars are compiled per request; the GBNF text of identical constraints is reused."""

    entries: dict[str, str] = field(default_factory=dict)

    def gbnf(self, constraint: OutputConstraint) -> str:
        key = json.dumps(asdict(constraint), sort_keys=True, default=str)
        if key not in self.entries:
            if len(self.entries) > 64:
                self.entries.clear()
            self.entries[key] = to_gbnf(constraint)
        return self.entries[key]
