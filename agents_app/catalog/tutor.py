"""Homework tutor: a triage agent hands off to a math or a history tutor, behind an input
guardrail in which a small classifier agent (structured output) decides whether the question
is homework, and in which subject. Plain-string instructions for the triage agent; the tutors'
instructions are functions of the run context.

After a handoff the conversation continues with the tutor that answered (the run service
starts the next run with `Conversation.current_agent_name`). Input guardrails run only for the
agent a run starts with, so every agent here carries the homework check. The check's subject
routes the message, for every model, before any tutor answers:

- the triage agent must hand off (`tool_choice="required"`), and only the handoff to the
  tutor of that subject is enabled (both when the subject is unclear);
- a tutor whose field it is answers, with no handoff on offer; a tutor who gets the other
  subject is told so and offered only the handoff to the right tutor (as in the SDK's
  customer-service example, where specialists hand back to triage; here the subject is
  already known, so it goes straight to the right one). When the subject is unclear, a tutor
  may hand back to triage.
"""

from __future__ import annotations

from typing import Literal

from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    RunContextWrapper,
    TResponseInputItem,
    handoff,
    input_guardrail,
)
from pydantic import BaseModel, Field

from agents_app.context import ChatContext
from agents_app.guardrails import (
    INPUT_GUARDRAILS,
    latest_user_text,
    recent_conversation,
)
from agents_app.registry import AgentSpec
from agents_app.tooling import run_nested

SUBJECT = "homework_subject"  # ChatContext.extras key: the subject the check found


class HomeworkCheck(BaseModel):
    is_homework: bool
    reasoning: str
    # "other" first: a model that fills schemas with their first value routes nowhere special.
    subject: Literal["other", "math", "history"] = Field(
        default="other", description="math or history for homework (a follow-up keeps the earlier subject), else other."
    )


homework_check_agent = Agent[ChatContext](
    name="Homework check",
    instructions=(
        "You screen messages sent to a homework tutor for math and history. Decide whether the "
        "latest user message is a homework or study question in math or history, or part of an "
        "ongoing homework conversation: follow-ups such as \"and what happened next?\", \"show "
        "me another example\", a clarification, thanks or a greeting after earlier homework "
        "messages all count as homework. Anything else (other subjects, chit-chat with no "
        "homework, requests to do unrelated tasks such as recipes, letters or bookings) is not "
        "homework, even in the middle of a homework conversation. Give a one-sentence "
        "reasoning. Set subject to math or history for homework: the subject of the latest "
        "message, or for a follow-up the subject of the earlier messages; otherwise other."
    ),
    output_type=HomeworkCheck,
)


def subject_of(ctx: RunContextWrapper[ChatContext]) -> str | None:
    """math, history, or None when the check found no clear subject."""
    subject = ctx.context.extras.get(SUBJECT)
    return subject if subject in ("math", "history") else None


@input_guardrail(name="homework", run_in_parallel=False)
async def homework_guardrail(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    # Not in parallel: a question that is not homework must not be answered or handed off
    # (and streamed to the user) before the check trips; and its subject routes the message.
    # The new message comes last; the earlier ones tell a follow-up ("and 2x = 8?") apart.
    earlier = recent_conversation(input[:-1]) if isinstance(input, list) else ""
    prompt = f"Earlier messages:\n{earlier or '(none)'}\n\nLatest user message:\n{latest_user_text(input)}"
    result = await run_nested(homework_check_agent, prompt, ctx=ctx, max_turns=1)
    check = result.final_output_as(HomeworkCheck)
    ctx.context.extras[SUBJECT] = check.subject if check.is_homework else None
    return GuardrailFunctionOutput(
        output_info={
            "message": "I can only help with math and history homework. For anything else, start a "
            "conversation with the Assistant.",
            "reasoning": check.reasoning,
            "subject": check.subject,
        },
        tripwire_triggered=not check.is_homework,
    )


GUARDRAILS = [*INPUT_GUARDRAILS, homework_guardrail]

TUTORS = {"math": "Math Tutor", "history": "History Tutor"}
FIELDS = {
    "math": (
        "You help students with math homework. Explain your reasoning step by step and include a "
        "worked example. Guide the student towards the answer rather than only giving it. Use "
        "Markdown; write formulas in plain text or inline code."
    ),
    "history": (
        "You help students with history homework. Explain events and their context clearly, give "
        "dates, and distinguish established facts from interpretations."
    ),
}


def tutor_instructions(field: str):
    other = "history" if field == "math" else "math"

    def instructions(ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext]) -> str:
        if subject_of(ctx) == other:
            target = TUTORS[other]
            return (
                f"You are the {TUTORS[field]}. The student's new message is a {other} question, which is "
                f"not your field: do not answer it. Hand it to the {target} by calling "
                f"`transfer_to_{target.lower().replace(' ', '_')}`; the {target} will answer."
            )
        return FIELDS[field]

    return instructions


def _when(*subjects: str | None):
    def enabled(ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext]) -> bool:
        return subject_of(ctx) in subjects

    return enabled


math_tutor = Agent[ChatContext](
    name="Math Tutor",
    handoff_description="Specialist for math homework: arithmetic, algebra, geometry, calculus, statistics.",
    instructions=tutor_instructions("math"),
    input_guardrails=GUARDRAILS,
)

history_tutor = Agent[ChatContext](
    name="History Tutor",
    handoff_description="Specialist for history homework: events, people, causes and consequences, sources.",
    instructions=tutor_instructions("history"),
    input_guardrails=GUARDRAILS,
)

triage_agent = Agent[ChatContext](
    name="Tutor Triage",
    handoff_description="Routes a homework question to the tutor of its subject.",
    instructions=(
        "You route homework questions. If the question is about math, hand off to the Math Tutor; "
        "if it is about history, hand off to the History Tutor. Do not answer it yourself."
    ),
    handoffs=[
        handoff(math_tutor, is_enabled=_when("math", None)),
        handoff(history_tutor, is_enabled=_when("history", None)),
    ],
    # Routing is its only job: it always hands off (the SDK resets this after the handoff).
    model_settings=ModelSettings(tool_choice="required"),
    input_guardrails=GUARDRAILS,
)

# A tutor is offered the other tutor only for the other subject, and triage only when the
# subject is unclear; for its own subject it has nothing to hand off to and simply answers.
math_tutor.handoffs = [handoff(history_tutor, is_enabled=_when("history")), handoff(triage_agent, is_enabled=_when(None))]
history_tutor.handoffs = [handoff(math_tutor, is_enabled=_when("math")), handoff(triage_agent, is_enabled=_when(None))]

spec = AgentSpec(
    key="tutor",
    title="Homework tutor",
    description="Math and history homework help: a triage agent hands you to the right tutor. Homework only.",
    agent=triage_agent,
    max_turns=6,
    workflow_name="Homework tutor",
)
