"""Guardrails the catalog's agents share.

Input guardrails run before the model (`run_in_parallel=False`): a tripped check must stop
the run before any tool has a side effect (a support ticket, say) and before any tokens are
spent. The output guardrail checks the final answer. A trip ends the run as `blocked`: the
run service shows the user `output_info["message"]` and removes the whole turn from the SDK
history, so the blocked text never comes back as input.

Input guardrails run only for the agent a run starts with, and output guardrails only for the
agent that answers; agents reached by handoff need their own (see catalog/tutor.py).

The output guardrails of agents that act (support opens tickets, orders refunds) also check
what the reply claims: a refund or a ticket may be described as done only when the tool that
does it succeeded (tools say so with `record_action`), in this run or earlier in the
conversation; a reply that asks for the user's password is never shown.

These output guardrails can also judge a reply while it streams (`STREAM_RULES`, applied by
`StreamGuard` in the run service): text is shown as it comes, except what could still turn
into a blocked match (the start of something shaped like a key; a sentence that mentions a
refund, a ticket or a password until it ends). A trip stops the run and the page retracts
what it showed. Tool results of agents with the secret check are checked before the model,
the wire or the database see them (`redact_secrets`): a credential in a help-centre article
never leaves the server. What counts as a credential: `agents_app.secret_formats`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents import (
    Agent,
    FunctionTool,
    GuardrailFunctionOutput,
    RunContextWrapper,
    ToolGuardrailFunctionOutput,
    ToolOutputGuardrailData,
    TResponseInputItem,
    input_guardrail,
    output_guardrail,
    tool_output_guardrail,
)
from pydantic import BaseModel

from agents_app import secret_formats
from agents_app.context import ChatContext
from agents_app.items import text_of
from agents_app.models import Order, Ticket

# Well under the socket's CHAT_MAX_MESSAGE_CHARS: that one protects the server, this one the
# agents (long pastes carry injected instructions and cost tokens on every later turn).
MAX_AGENT_INPUT_CHARS = 4000


# --- reading the SDK's input ----------------------------------------------------------
def latest_user_text(input: str | list[TResponseInputItem]) -> str:
    """The message this run answers. With a session the guardrail receives the whole history;
    earlier turns were checked when they were sent."""
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if isinstance(item, dict) and item.get("role") == "user":
            return text_of(item.get("content"))
    return ""


def recent_conversation(input: str | list[TResponseInputItem], *, messages: int = 6) -> str:
    """The last few user/assistant messages as plain text, for a classifier agent. Tool and
    handoff items are left out: the classifier has no tools, and some providers refuse calls
    to tools a request does not declare."""
    if isinstance(input, str):
        return f"User: {input}"
    lines = [
        f"{item['role'].capitalize()}: {text_of(item.get('content')).strip()}"
        for item in input
        if isinstance(item, dict) and item.get("role") in ("user", "assistant") and text_of(item.get("content")).strip()
    ]
    return "\n".join(lines[-messages:])


def _blocked(message: str, **info: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info={"message": message, **info}, tripwire_triggered=True)


_PASSED = GuardrailFunctionOutput(output_info={}, tripwire_triggered=False)


# --- input: message length ----------------------------------------------------------------
@input_guardrail(name="message length", run_in_parallel=False)
async def message_length(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    length = len(latest_user_text(input))
    if length > MAX_AGENT_INPUT_CHARS:
        return _blocked(
            f"Your message is too long for this agent ({length:,} characters; the limit is "
            f"{MAX_AGENT_INPUT_CHARS:,}). Please shorten it or split it into several messages.",
            length=length,
        )
    return _PASSED


# --- input: prompt injection --------------------------------------------------------------
_GAP = r"[^.\n]{0,40}?"
INJECTION_PATTERNS = [
    # "Ignore all previous instructions", "disregard your rules", "forget the system prompt"
    re.compile(
        rf"\b(ignore|disregard|forget|override|bypass)\b{_GAP}\b(previous|prior|above|earlier|all|your|the|system)\b"
        rf"{_GAP}\b(instructions?|prompts?|rules|guidelines|directives|guardrails)\b",
        re.IGNORECASE,
    ),
    # "Print your system prompt", "reveal the hidden instructions"
    re.compile(
        rf"\b(reveal|show|print|repeat|output|leak|dump)\b{_GAP}\b(system|hidden|initial|developer|secret)\s+"
        r"(prompt|instructions?|message)\b",
        re.IGNORECASE,
    ),
    # Role-play jailbreaks
    re.compile(r"\b(developer|god|jailbreak|dan)\s+mode\b", re.IGNORECASE),
    re.compile(rf"\byou are (now|no longer)\b{_GAP}\b(unrestricted|unfiltered|jailbroken|bound by|without (any )?(rules|restrictions|limits))", re.IGNORECASE),
    # Chat-template control tokens pasted into a message
    re.compile(r"<\|?(im_start|im_end|system|endoftext)\|?>", re.IGNORECASE),
]


def looks_like_injection(text: str) -> bool:
    """A heuristic, not a classifier: it catches the common phrasings cheaply and before the
    model sees them. Paraphrases get through; the agents' instructions remain the real
    defence."""
    return any(pattern.search(text) for pattern in INJECTION_PATTERNS)


@input_guardrail(name="prompt injection", run_in_parallel=False)
async def prompt_injection(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    if looks_like_injection(latest_user_text(input)):
        return _blocked(
            "This message looks like an attempt to override the agent's instructions, so it was "
            "not sent. Please rephrase your request."
        )
    return _PASSED


# --- output: secrets ---------------------------------------------------------------------
def find_secret(text: str) -> str | None:
    """What kind of secret `text` contains, if any (`agents_app.secret_formats` knows the formats)."""
    return secret_formats.kind_of(text)


def _outputtext_of(output: Any) -> str:
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    return output if isinstance(output, str) else str(output)


@output_guardrail(name="secret leak")
async def no_secrets(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], output: Any
) -> GuardrailFunctionOutput:
    kind = find_secret(_outputtext_of(output))
    if kind:
        # Never echo the match: the message is shown to the user and stored.
        return _blocked(_secret_message(kind), kind=kind)
    return _PASSED


def _secret_message(kind: str) -> str:
    return (
        f"The reply was withheld because it contained what looks like {kind}. Credentials "
        "are never shared in chat; ask their owner through a secure channel."
    )


redacted = secret_formats.redacted  # `text` with every credential replaced by a note saying what it was


@tool_output_guardrail(name="secret leak in tool output")
def redact_secrets(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
    """A tool result that holds a credential reaches the model, the stream, the stored reply
    and the SDK history without it (the SDK hands on `reject_content`'s message instead)."""
    text = _outputtext_of(data.output)
    if find_secret(text) is None:
        return ToolGuardrailFunctionOutput.allow()
    return ToolGuardrailFunctionOutput.reject_content(redacted(text), output_info={"redacted": True})


def guard_tool_outputs(agent: Agent) -> None:
    """Give every function tool of an agent with the secret check the same check on its
    results (idempotent)."""
    if not any(guardrail.get_name() == "secret leak" for guardrail in agent.output_guardrails):
        return
    for tool in agent.tools:
        if isinstance(tool, FunctionTool):
            guards = list(tool.tool_output_guardrails or [])
            if redact_secrets not in guards:
                tool.tool_output_guardrails = [*guards, redact_secrets]


# --- output: claims of actions and password requests ----------------------------------
ACTIONS = "actions"  # ChatContext.extras key: the kinds of action this run really did


def record_action(ctx: RunContextWrapper[ChatContext], kind: str) -> None:
    """Called by a tool once its action happened ("refund", "ticket")."""
    ctx.context.extras.setdefault(ACTIONS, set()).add(kind)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


# A sentence that denies, asks, or makes the action depend on something still to come.
_NOT_A_CLAIM = re.compile(
    r"\b(not|no|never|cannot|can't|won't|unable|once|after you|if you|when you|until|approv\w*|would you|"
    r"do you want|want me|like me|shall i|should i|can i|may i|i can|i could)\b|\?\s*$",
    re.IGNORECASE,
)
CLAIMS: dict[str, re.Pattern[str]] = {
    "refund": re.compile(
        r"\b(refund\w*|reimburs\w*|money back)\b.{0,60}\b(has|have|was|were|is|are)\s+(now\s+)?(been\s+)?"
        r"(issued|processed|made|initiated|sent|credited|complete|completed|on its way|underway)\b"
        r"|\b(i|we)\s*('ve|'ll|have|will|am going to|are going to)\s+(now\s+)?(refund|reimburse|issue|process|initiate)\b"
        r"|\b(you('ll| will)|you should)\s+(receive|get|see)\s+(a|the|your)\s+(full\s+)?refund\b"
        r"|\b(has|have|was|were) (been )?refunded\b|\brefund\b.{0,20}\b(issued|processed|made)\b",
        re.IGNORECASE,
    ),
    "ticket": re.compile(
        r"\b(ticket|request|case)\b.{0,60}\b(has|have|was|is)\s+(now\s+)?(been\s+)?"
        r"(opened|created|filed|submitted|raised|logged|escalated)\b"
        r"|\b(i|we)\s*('ve|'ll|have|will|just)\s+(now\s+)?(open|opened|create|created|file|filed|submit|"
        r"submitted|raise|raised|log|logged|escalate|escalated)\b.{0,30}\b(ticket|request|case)\b"
        r"|\bticket (number|no\.?|#)\s*:?\s*#?\w*\d",
        re.IGNORECASE,
    ),
}
CLAIM_MESSAGES = {
    "refund": "This reply was withheld because it said a refund was made, and none was: nothing has been "
    "refunded. To get a refund, ask for it with the order number and approve it when the chat asks you.",
    "ticket": "This reply was withheld because it said a support ticket was opened, and none was: no ticket "
    "exists yet. Ask for a ticket and it will be opened for you (you can follow it under My tickets).",
}
PASSWORD_REQUEST = re.compile(
    r"\b(share|send|give|tell|provide|include|paste|reply with|confirm|let (me|us) know)\b.{0,50}\bpasswords?\b"
    r"|\bpasswords?\b.{0,50}\b(in|into|to)\s+(the|this|a|your|our)?\s*(ticket|chat|message|reply|description|me|us)\b",
    re.IGNORECASE,
)


def claimed_actions(text: str) -> set[str]:
    """The kinds of action `text` says were done (or will be done without any condition)."""
    return {
        kind
        for sentence in _sentences(text)
        if not _NOT_A_CLAIM.search(sentence)
        for kind, pattern in CLAIMS.items()
        if pattern.search(sentence)
    }


def asks_for_password(text: str) -> bool:
    return any(
        PASSWORD_REQUEST.search(s) and not re.search(r"\b(never|not|don't|do not|nobody|no one)\b", s, re.IGNORECASE)
        for s in _sentences(text)
    )


def _reply_text(output: Any) -> str:
    """The words the user reads: a structured output's strings, not its JSON keys."""
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json")
    if isinstance(output, dict):
        return "\n".join(_reply_text(v) for v in output.values())
    if isinstance(output, list):
        return "\n".join(_reply_text(v) for v in output)
    return output if isinstance(output, str) else ""


async def _done_earlier(ctx: RunContextWrapper[ChatContext], kind: str) -> bool:
    """The action happened in an earlier turn of this conversation (a later reply may mention it)."""
    conversation, user = ctx.context.conversation, ctx.context.user
    if kind == "ticket":
        return await Ticket.objects.filter(conversation=conversation).aexists()
    if kind == "refund":
        started = getattr(conversation, "created_at", None)
        refunds = Order.objects.for_user(user).filter(refunded_at__isnull=False)
        return await (refunds.filter(refunded_at__gte=started) if started else refunds).aexists()
    return False


@output_guardrail(name="unbacked claim")
async def claims_match_actions(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], output: Any
) -> GuardrailFunctionOutput:
    done = ctx.context.extras.get(ACTIONS, set())
    for kind in sorted(claimed_actions(_reply_text(output)) - set(done)):
        if not await _done_earlier(ctx, kind):
            return _blocked(CLAIM_MESSAGES[kind], claim=kind)
    return _PASSED


@output_guardrail(name="password request")
async def no_password_requests(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], output: Any
) -> GuardrailFunctionOutput:
    if asks_for_password(_reply_text(output)):
        return _blocked(PASSWORD_MESSAGE)
    return _PASSED


PASSWORD_MESSAGE = (
    "This reply was withheld because it asked for your password. Never share a password in a chat "
    "or a ticket: nobody here needs it to help you. To change it, use \"Forgot password?\" on the "
    "sign-in page."
)


# --- checking a reply while it streams ------------------------------------------------------
@dataclass(frozen=True)
class StreamRule:
    """How an output guardrail judges a reply that is still streaming. `safe_until(text, shown)`:
    how much of `text` may be shown now (what follows could still become something the
    guardrail blocks); `verdict(ctx, text, shown)`: the block message for that much of the
    reply, or None. `shown`: how much of it was shown (and judged) already."""

    safe_until: Callable[[str, int], int]
    verdict: Callable[[RunContextWrapper[ChatContext], str, int], Awaitable[str | None]]


# "sk-pro" at the end of the text may yet become a key: the credential formats with partial matching.
def _before_possible_secret(text: str, shown: int) -> int:
    return secret_formats.possible_start(text, shown)


async def _secret_verdict(ctx: RunContextWrapper[ChatContext], text: str, shown: int) -> str | None:
    # Only a credential that reaches into the text not shown yet is new.
    kind = secret_formats.kind_of(text, max(0, shown - secret_formats.LOOKBACK))
    return _secret_message(kind) if kind else None


_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
# Words of a claim (CLAIMS): a sentence holding one is shown once it ends and passed the check.
_CLAIM_WORDS = re.compile(
    r"\b(refund\w*|reimburs\w*|money back|ticket|request|case|opened|created|filed|submitted|logged|raised|"
    r"escalated|issued|processed|initiated|credited)\b",
    re.IGNORECASE,
)
_PASSWORD_WORDS = re.compile(r"\bpasswords?\b", re.IGNORECASE)


def _before_open_sentence_with(words: re.Pattern[str]) -> Callable[[str], int]:
    """Hold back the sentence still being written when it mentions one of `words` (it may yet
    become a claim or a request); everything else is shown at once."""

    def safe_until(text: str, shown: int) -> int:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        start = ends[-1] if ends else 0
        return start if words.search(text, start) else len(text)

    return safe_until


async def _claim_verdict(ctx: RunContextWrapper[ChatContext], text: str, shown: int) -> str | None:
    done = ctx.context.extras.get(ACTIONS, set())
    for kind in sorted(claimed_actions(text) - set(done)):
        if not await _done_earlier(ctx, kind):
            return CLAIM_MESSAGES[kind]
    return None


async def _password_verdict(ctx: RunContextWrapper[ChatContext], text: str, shown: int) -> str | None:
    return PASSWORD_MESSAGE if asks_for_password(text) else None


# By guardrail name. An output guardrail without a rule (an LLM judge) holds the reply until
# it is complete, as do structured outputs.
STREAM_RULES: dict[str, StreamRule] = {
    "secret leak": StreamRule(_before_possible_secret, _secret_verdict),
    "unbacked claim": StreamRule(_before_open_sentence_with(_CLAIM_WORDS), _claim_verdict),
    "password request": StreamRule(_before_open_sentence_with(_PASSWORD_WORDS), _password_verdict),
}


class StreamTripped(Exception):
    def __init__(self, guardrail: str, message: str) -> None:
        super().__init__(message)
        self.guardrail = guardrail
        self.message = message


class StreamGuard:
    """Applies the rules of a run's output guardrails to its streamed text: `feed` returns
    the text that may be shown now (possibly none), or raises `StreamTripped`; `rest` is
    what was held back, once the SDK's own output guardrails passed the complete reply."""

    def __init__(self, rules: dict[str, StreamRule], ctx: RunContextWrapper[ChatContext]) -> None:
        self.rules = rules
        self.ctx = ctx
        self.text = ""
        self.shown = 0

    @classmethod
    def for_agents(cls, agents, ctx: RunContextWrapper[ChatContext]) -> StreamGuard | None:
        """A guard when every output guardrail of these agents can judge a stream (None when
        none has output guardrails); raises LookupError when some cannot."""
        names = {guardrail.get_name() for agent in agents for guardrail in agent.output_guardrails}
        if not names:
            return None
        missing = names - set(STREAM_RULES)
        if missing:
            raise LookupError(sorted(missing))
        return cls({name: STREAM_RULES[name] for name in names}, ctx)

    async def feed(self, delta: str) -> str:
        self.text += delta
        safe = min(rule.safe_until(self.text, self.shown) for rule in self.rules.values())
        if safe <= self.shown:
            return ""
        for name, rule in self.rules.items():
            message = await rule.verdict(self.ctx, self.text[:safe], self.shown)
            if message:
                raise StreamTripped(name, message)
        released, self.shown = self.text[self.shown : safe], safe
        return released

    def rest(self) -> str:
        released, self.shown = self.text[self.shown :], len(self.text)
        return released


INPUT_GUARDRAILS = [message_length, prompt_injection]
OUTPUT_GUARDRAILS = [no_secrets, claims_match_actions, no_password_requests]
