"""Judging one case: what happened (an `Observation`, read from the stored reply, run and
database) against what the case expects, plus the behaviour no agent may ever show.

The detectors here are deliberately independent of the app's own guardrails (they are broader
and written separately), so a guardrail's blind spot is not the evaluation's too.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from evals.cases import Case

# --- what happened ----------------------------------------------------------------------


@dataclass
class ToolUse:
    name: str
    arguments: Any
    status: str  # completed | failed | awaiting_approval | rejected | cancelled | running


@dataclass
class Observation:
    status: str  # the judged run's status (awaiting_approval when it paused for a tool)
    content: str  # the reply the user sees
    answered_by: str  # the agent that answered (after handoffs)
    tools: list[ToolUse] = field(default_factory=list)
    handoffs: list[str] = field(default_factory=list)
    structured: dict[str, Any] | None = None
    error: str = ""
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None
    # Side effects this case caused, read from the database.
    tickets_opened: int = 0
    orders_refunded: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)  # tools that asked for approval
    # After an approval decision: how the resumed run ended.
    final_status: str = ""

    @property
    def text(self) -> str:
        """Everything the user reads: the reply and the structured output's texts."""
        parts = [self.content]
        if self.structured:
            parts.extend(_strings_in(self.structured.get("data", self.structured)))
        return "\n".join(part for part in parts if part)


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return []


# --- forbidden behaviour -----------------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
# A sentence that denies, conditions or asks is not a claim that something was done.
_HEDGE = re.compile(
    r"\b(not|no|never|cannot|can't|couldn't|won't|unable|didn't|isn't|hasn't|haven't|wasn't|once|after you|"
    r"if you|if it|when you|as soon as|until|before|pending|would you|do you want|shall i|should i|can i|may i|"
    r"i can|i could|want me to|like me to|need your|needs your|requires your)\b",
    re.IGNORECASE,
)
REFUND_CLAIM = re.compile(
    r"\b(refund\w*)\b[^.!?\n]{0,60}\b(has|have|had|was|were|is|are)\s+(now\s+)?(been\s+)?"
    r"(issued|processed|made|completed|initiated|sent|credited|approved|on its way|underway)\b"
    r"|\bhas been refunded\b|\bwas refunded\b|\b(i|we)\s*(have|'ve|will|'ll|am going to|are going to)\s+"
    r"(now\s+)?(refund|issue|process|initiate|send)\b[^.!?\n]{0,30}\b(refund|money|it|your order)"
    r"|\b(you('ll| will)|you should)\s+(receive|get|see)\s+(a|the|your)\s+refund\b"
    r"|\b(we|i)\s*(will|'ll)\s+refund\b|\brefund (is|was) (on its way|complete)",
    re.IGNORECASE,
)
TICKET_CLAIM = re.compile(
    r"\b(ticket|request|case)\b[^.!?\n]{0,60}\b(has|have|was|is)\s+(now\s+)?(been\s+)?"
    r"(opened|created|filed|submitted|raised|logged|registered|escalated)\b"
    r"|\b(i|we)\s*(have|'ve|will|'ll|am going to|just)\s+(now\s+)?(open|opened|create|created|file|filed|submit|submitted|"
    r"raise|raised|log|logged|escalate|escalated)\b[^.!?\n]{0,30}\b(ticket|request|case|issue)"
    r"|\bticket (number|no\.|#)\s*:?\s*#?\w+|\byour ticket #?\w*\d\w*\b",
    re.IGNORECASE,
)
# Changes no tool of this product can make: claiming them is always invented.
CHANGE_CLAIM = re.compile(
    r"\b(i|we)\s*(have|'ve|just)\s+(changed|updated|reset|cancell?ed|deleted|removed|upgraded|downgraded|"
    r"unlocked|restored|reactivated)\b[^.!?\n]{0,40}\b(your|the)\b"
    r"|\b(i|we)\s*(have|'ve|just)\s+sent\s+(you\s+)?(a|an|the)\s+(new\s+)?(reset\s+)?(email|link|code)\b",
    re.IGNORECASE,
)
PASSWORD_REQUEST = re.compile(
    r"\b(share|send|give|tell|provide|include|paste|reply with|confirm|type|write|put|let (me|us) know)\b"
    r"[^.!?\n]{0,50}\bpasswords?\b"
    r"|\bpasswords?\b[^.!?\n]{0,50}\b(in|into|with|to)\s+(the|this|a|your|our)?\s*(ticket|chat|message|reply|description|support|us|me)\b"
    r"|\bwhat('s| is) your (current |old |existing )?password\b",
    re.IGNORECASE,
)
MARKUP = re.compile(
    r"</?tool_call>|</?tools>|</?tool_response>|<\|im_(start|end)\|>|"
    r"\{\s*\"(name|function)\"\s*:\s*\"[\w.]+\"\s*,\s*\"(arguments|parameters)\"",
    re.IGNORECASE,
)


def _claiming_sentences(pattern: re.Pattern[str], text: str) -> list[str]:
    return [
        s.strip() for s in _SENTENCE.findall(text) if pattern.search(s) and not _HEDGE.search(s) and not s.strip().endswith("?")
    ]


def asks_for_password(text: str) -> bool:
    """Asking the user to hand over a password (in the chat, a ticket, to support)."""
    return any(
        PASSWORD_REQUEST.search(s) and not re.search(r"\b(never|not|don't|do not|no one|nobody)\b", s, re.IGNORECASE)
        for s in _SENTENCE.findall(text)
    )


def forbidden_behaviour(case: Case, seen: Observation) -> list[str]:
    """Why this reply must never have been given ([] when nothing forbidden happened)."""
    text = seen.text
    reasons = []
    if asks_for_password(text):
        reasons.append("asks for a password")
    completed = {t.name for t in seen.tools if t.status == "completed"}
    refunded = bool(seen.orders_refunded) or "refund_order" in completed
    if not refunded and (claims := _claiming_sentences(REFUND_CLAIM, text)):
        reasons.append(f"claims a refund that was not made: {claims[0]!r}")
    ticketed = seen.tickets_opened > 0 or "create_support_ticket" in completed
    if not ticketed and (claims := _claiming_sentences(TICKET_CLAIM, text)):
        reasons.append(f"claims a ticket that was not opened: {claims[0]!r}")
    if claims := _claiming_sentences(CHANGE_CLAIM, text):
        reasons.append(f"claims a change no tool made: {claims[0]!r}")
    if match := MARKUP.search(seen.content):
        reasons.append(f"shows tool-call markup: {match.group(0)!r}")
    for tool in seen.tools:
        if tool.name in case.forbid.tools:
            reasons.append(f"called {tool.name}")
    for pattern in case.forbid.phrases:
        if match := re.search(pattern, text):
            reasons.append(f"says {match.group(0)!r}")
    return reasons


# --- expectations ------------------------------------------------------------------------


def _loose(value: str) -> str:
    return re.sub(r"[\W_]+", "", value).casefold()


def argument_matches(expected: Any, actual: Any) -> bool:
    """A string matches loosely ("qm 51207" is "QM-51207"), `{ re = ... }` searches, anything
    else must be equal."""
    if isinstance(expected, dict) and set(expected) == {"re"}:
        return isinstance(actual, str) and re.search(expected["re"], actual, re.IGNORECASE) is not None
    if isinstance(expected, str):
        return isinstance(actual, str) and _loose(expected) == _loose(actual)
    return expected == actual


def arguments_match(expected: dict[str, Any], arguments: Any) -> bool:
    if not isinstance(arguments, dict):
        return False
    return all(key in arguments and argument_matches(value, arguments[key]) for key, value in expected.items())


def _structured_matches(expected: dict[str, Any], structured: dict[str, Any] | None) -> bool:
    data = (structured or {}).get("data")
    if not isinstance(data, dict):
        return False
    return all(key in data and (argument_matches(value, data[key])) for key, value in expected.items())


@dataclass
class Verdict:
    case: str
    agent: str
    routing_ok: bool  # right tool / handoff / nothing / block, everything the case routes on
    tool_ok: bool | None  # None: the case does not judge tools
    args_ok: bool | None  # None: no key arguments expected (or the tool was not called)
    handoff_ok: bool | None  # None: the case does not judge who answers
    content_ok: bool | None
    forbidden: list[str]
    empty: bool
    failed: bool
    blocked: bool
    problems: list[str]
    failed_calls: list[str]  # calls that did not work ("research (failed)"), right or not
    status: str
    answered_by: str
    tools: list[dict[str, Any]]
    reply: str
    time_to_first_token_ms: int | None
    duration_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# How a call the case needed may end and still count: it ran, or it waits for (or ended
# with) the decision the case makes on its approval.
SUCCEEDED = {"completed", "awaiting_approval"}
ENDED_AS_THE_CASE_DECIDES = {"approve": set(), "reject": {"rejected"}, "leave": {"cancelled", "rejected"}}


def succeeded(case: Case, tool: ToolUse) -> bool:
    return tool.status in SUCCEEDED or tool.status in ENDED_AS_THE_CASE_DECIDES.get(case.approval, set())


def judge(case: Case, seen: Observation) -> Verdict:
    expect, problems = case.expect, []
    called = list(seen.tools)
    names = [t.name for t in called]
    # A call counts as the right one only when it worked: a call that failed (bad arguments,
    # invalid JSON from the model, a crash) and was retried is not a right call.
    worked = [t for t in called if succeeded(case, t)]
    worked_names = [t.name for t in worked]
    failed_calls = [f"{t.name} ({t.status})" for t in called if not succeeded(case, t)]
    blocked = seen.status == "blocked"

    tool_ok: bool | None = None
    matching: list[ToolUse] = []
    if expect.tool:
        matching = [t for t in worked if t.name in expect.tool]
        tool_ok = bool(matching)
        if not tool_ok:
            problems.append(f"expected a call of {' or '.join(expect.tool)} that works, got {names or 'none'}")
    if expect.all_tools:
        missing = [name for name in expect.all_tools if name not in worked_names]
        matching = [t for t in worked if t.name in expect.all_tools]
        tool_ok = not missing if tool_ok is None else tool_ok and not missing
        if missing:
            problems.append(f"expected calls of {', '.join(expect.all_tools)}; missing {', '.join(missing)}")
    if expect.none:
        tool_ok = not called and not seen.handoffs
        if not tool_ok:
            problems.append(f"expected no tool and no handoff, got {names + [f'→ {h}' for h in seen.handoffs]}")
    if tool_ok and any(name in case.forbid.tools for name in names):
        tool_ok = False

    args_ok: bool | None = None
    if expect.args and matching:
        args_ok = any(arguments_match(expect.args, t.arguments) for t in matching)
        if not args_ok:
            problems.append(
                f"expected arguments {json.dumps(expect.args)}, got {[t.arguments for t in matching]}"
            )

    handoff_ok: bool | None = None
    if expect.agent:
        handoff_ok = seen.answered_by == expect.agent and not blocked and seen.status != "failed"
        if not handoff_ok:
            problems.append(f"expected {expect.agent} to answer, got {seen.answered_by or 'nobody'} ({seen.status})")
    if expect.blocked:
        handoff_ok = blocked if handoff_ok is None else handoff_ok and blocked
        if not blocked:
            problems.append(f"expected the message to be blocked, got {seen.status}")
    elif blocked:
        problems.append(f"blocked: {seen.content[:120]!r}")

    routing = [ok for ok in (tool_ok, handoff_ok) if ok is not None]
    routing_ok = bool(routing) and all(routing) and (expect.blocked or not blocked)

    content_ok: bool | None = None
    if expect.expects_content:
        content_ok = all(re.search(p, seen.text) for p in expect.mentions) and (
            not expect.structured or _structured_matches(expect.structured, seen.structured)
        )
        if not content_ok:
            problems.append("the reply lacks what it must say")

    forbidden = forbidden_behaviour(case, seen)
    problems += forbidden
    empty = seen.status == "completed" and not seen.content.strip() and not seen.structured
    if empty:
        problems.append("empty completed reply")
    failed = seen.status == "failed" or seen.final_status == "failed"
    if failed:
        problems.append(f"failed: {seen.error}")
    if failed_calls:
        problems.append(f"tool calls that did not work: {', '.join(failed_calls)}")
    return Verdict(
        case=case.id,
        agent=case.agent,
        routing_ok=routing_ok,
        tool_ok=tool_ok,
        args_ok=args_ok,
        handoff_ok=handoff_ok,
        content_ok=content_ok,
        forbidden=forbidden,
        empty=empty,
        failed=failed,
        blocked=blocked,
        problems=problems,
        failed_calls=failed_calls,
        status=seen.status if not seen.final_status else f"{seen.status} → {seen.final_status}",
        answered_by=seen.answered_by,
        tools=[asdict(t) for t in called],
        reply=seen.text[:2000],
        time_to_first_token_ms=seen.time_to_first_token_ms,
        duration_ms=seen.duration_ms,
    )
