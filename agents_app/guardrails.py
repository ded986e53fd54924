"""Guardrails the catalog's agents share.

Input guardrails run before the model (`run_in_parallel=False`): a tripped check must stop
the run before any tool has a side effect (a support ticket, say) and before any tokens are
spent. The output guardrail checks the final answer. A trip ends the run as `blocked`: the
run service shows the user `output_info["message"]` and removes the whole turn from the SDK
history, so the blocked text never comes back as input.

Input guardrails run only for the agent a run starts with, and output guardrails only for the
agent that answers; agents reached by handoff need their own (see catalog/tutor.py).
"""

from __future__ import annotations

import re
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunContextWrapper,
    TResponseInputItem,
    input_guardrail,
    output_guardrail,
)
from pydantic import BaseModel

from agents_app.context import ChatContext
from agents_app.items import text_of

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
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "an API key": re.compile(r"\bsk-(?:proj-|svcacct-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}"),
    "an AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "an AWS secret key": re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}", re.IGNORECASE),
    "a private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "an access token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,})"),
}


def find_secret(text: str) -> str | None:
    """What kind of secret `text` contains, if any."""
    return next((kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)), None)


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
        return _blocked(
            f"The reply was withheld because it contained what looks like {kind}. Credentials "
            "are never shared in chat; ask their owner through a secure channel.",
            kind=kind,
        )
    return _PASSED


INPUT_GUARDRAILS = [message_length, prompt_injection]
OUTPUT_GUARDRAILS = [no_secrets]
