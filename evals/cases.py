"""The evaluation's cases: loaded from a TOML file (`cases.toml` next to this module) and
checked before anything runs, so a typo in the data file is a clear error, not a silent pass.

One case is one user message sent to one agent, and what must (and must never) happen:

    [[cases]]
    id = "orders-damaged-refund"          # unique
    agent = "orders"                      # a registry key
    message = "..."                       # the message that is judged
    before = ["..."]                      # optional: earlier messages, run live, not judged
    history = [["user", "assistant"]]     # optional: earlier turns seeded into the conversation
    history_agent = "History Tutor"       # optional: who answered them (continues the chat)
    user = "customer"                     # customer (default) | staff
    approval = "leave"                    # a tool call awaiting approval: leave | approve | reject

    [cases.expect]                        # every key optional, at least one routing key
    tool = ["lookup_order"]               # one of these tools must be called ...
    all_tools = ["a", "b"]                # ... or all of these
    args = { order_number = "QM-51207" }  # key arguments of that call (see `arguments_match`)
    agent = "Math Tutor"                  # the agent that must answer (after handoffs)
    none = true                           # no tool call and no handoff at all
    blocked = true                        # an input guardrail must block the message
    mentions = ["(?i)forgot password"]    # regexes the reply must match (content check)
    structured = { status = "shipped" }   # fields the structured output must have

    [cases.forbid]
    tools = ["refund_order"]              # tools that must not be called
    phrases = ["(?i)bonjour"]             # regexes the reply must not match

Every case is also checked for the forbidden behaviour of every agent (see `evals.judge`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CASES = Path(__file__).with_name("cases.toml")
USERS = ("customer", "staff")
APPROVALS = ("leave", "approve", "reject")
_CASE_KEYS = {"id", "agent", "message", "before", "history", "history_agent", "user", "approval", "expect", "forbid", "note"}
_EXPECT_KEYS = {"tool", "all_tools", "args", "agent", "none", "blocked", "mentions", "structured"}
_FORBID_KEYS = {"tools", "phrases"}


class CaseFileError(ValueError):
    """The cases file is malformed; the message names the case and the field."""


@dataclass(frozen=True)
class Expect:
    tool: tuple[str, ...] = ()
    all_tools: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    agent: str = ""
    none: bool = False
    blocked: bool = False
    mentions: tuple[str, ...] = ()
    structured: dict[str, Any] = field(default_factory=dict)

    @property
    def expects_tool(self) -> bool:
        return bool(self.tool or self.all_tools or self.none)

    @property
    def expects_routing(self) -> bool:
        return bool(self.agent or self.blocked)

    @property
    def expects_content(self) -> bool:
        return bool(self.mentions or self.structured)


@dataclass(frozen=True)
class Forbid:
    tools: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    agent: str
    message: str
    expect: Expect
    forbid: Forbid = Forbid()
    before: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()
    history_agent: str = ""
    user: str = "customer"
    approval: str = "leave"
    note: str = ""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CaseFileError(f"{where}: expected a string or a list of non-empty strings")
    return tuple(value)


def _regexes(value: Any, where: str) -> tuple[str, ...]:
    patterns = _strings(value, where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CaseFileError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
    return patterns


def _table(raw: dict, key: str, allowed: set[str], where: str) -> dict:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise CaseFileError(f"{where}.{key}: expected a table")
    unknown = set(table) - allowed
    if unknown:
        raise CaseFileError(f"{where}.{key}: unknown field(s) {', '.join(sorted(unknown))}")
    return table


def _case(raw: Any, index: int, agents: set[str] | None) -> Case:
    where = f"case #{index + 1}"
    if not isinstance(raw, dict):
        raise CaseFileError(f"{where}: expected a table")
    where = f"case {raw.get('id', '#' + str(index + 1))!r}"
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise CaseFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("id", "agent", "message"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CaseFileError(f"{where}: `{key}` is required (a non-empty string)")
    if agents is not None and raw["agent"] not in agents:
        raise CaseFileError(f"{where}: unknown agent {raw['agent']!r} (known: {', '.join(sorted(agents))})")
    user = raw.get("user", "customer")
    if user not in USERS:
        raise CaseFileError(f"{where}: `user` must be one of {', '.join(USERS)}")
    approval = raw.get("approval", "leave")
    if approval not in APPROVALS:
        raise CaseFileError(f"{where}: `approval` must be one of {', '.join(APPROVALS)}")
    history = raw.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) and t for t in turn) for turn in history
    ):
        raise CaseFileError(f"{where}: `history` must be a list of [user, assistant] pairs of strings")

    expect_raw = _table(raw, "expect", _EXPECT_KEYS, where)
    args = expect_raw.get("args", {})
    if not isinstance(args, dict):
        raise CaseFileError(f"{where}.expect.args: expected a table")
    for name, value in args.items():
        if isinstance(value, dict):
            if set(value) != {"re"} or not isinstance(value["re"], str):
                raise CaseFileError(f"{where}.expect.args.{name}: a table must be {{ re = \"pattern\" }}")
            _regexes(value["re"], f"{where}.expect.args.{name}")
    structured = expect_raw.get("structured", {})
    if not isinstance(structured, dict):
        raise CaseFileError(f"{where}.expect.structured: expected a table")
    expect = Expect(
        tool=_strings(expect_raw["tool"], f"{where}.expect.tool") if "tool" in expect_raw else (),
        all_tools=_strings(expect_raw["all_tools"], f"{where}.expect.all_tools") if "all_tools" in expect_raw else (),
        args=dict(args),
        agent=expect_raw.get("agent", ""),
        none=bool(expect_raw.get("none", False)),
        blocked=bool(expect_raw.get("blocked", False)),
        mentions=_regexes(expect_raw["mentions"], f"{where}.expect.mentions") if "mentions" in expect_raw else (),
        structured=dict(structured),
    )
    if not (expect.expects_tool or expect.expects_routing):
        raise CaseFileError(f"{where}: `expect` needs at least one of tool, all_tools, none, agent, blocked")
    if expect.none and (expect.tool or expect.all_tools):
        raise CaseFileError(f"{where}: `expect.none` contradicts `expect.tool`")
    if args and not (expect.tool or expect.all_tools):
        raise CaseFileError(f"{where}: `expect.args` needs `expect.tool` or `expect.all_tools`")

    forbid_raw = _table(raw, "forbid", _FORBID_KEYS, where)
    forbid = Forbid(
        tools=_strings(forbid_raw["tools"], f"{where}.forbid.tools") if "tools" in forbid_raw else (),
        phrases=_regexes(forbid_raw["phrases"], f"{where}.forbid.phrases") if "phrases" in forbid_raw else (),
    )
    return Case(
        id=raw["id"],
        agent=raw["agent"],
        message=raw["message"],
        expect=expect,
        forbid=forbid,
        before=_strings(raw["before"], f"{where}.before") if raw.get("before") else (),
        history=tuple((u, a) for u, a in history),
        history_agent=raw.get("history_agent", ""),
        user=user,
        approval=approval,
        note=raw.get("note", ""),
    )


def parse_cases(text: str, *, agents: set[str] | None = None) -> list[Case]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseFileError(f"not valid TOML: {exc}") from None
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseFileError("the file needs at least one [[cases]] table")
    cases = [_case(raw, index, agents) for index, raw in enumerate(raw_cases)]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise CaseFileError(f"case {case.id!r}: the id is used twice")
        seen.add(case.id)
    return cases


def load_cases(path: Path | str = DEFAULT_CASES, *, agents: set[str] | None = None) -> list[Case]:
    """Every case of the file, validated. `agents`: the registry keys a case may name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse_cases(text, agents=agents)
