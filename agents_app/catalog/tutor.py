"""Homework tutor: a triage agent hands off to a math or a history tutor, behind an input
guardrail in which a small classifier agent (structured output) decides whether the question
is homework. Plain-string instructions.

After a handoff the conversation continues with the tutor that answered (the run service
starts the next run with `Conversation.current_agent_name`). Input guardrails run only for the
agent a run starts with, so every agent here carries the homework check, and each tutor can
hand over to the other when the subject changes.
"""

from __future__ import annotations

from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunContextWrapper,
    TResponseInputItem,
    input_guardrail,
)
from pydantic import BaseModel

from agents_app.context import ChatContext
from agents_app.guardrails import (
    INPUT_GUARDRAILS,
    latest_user_text,
    recent_conversation,
)
from agents_app.registry import AgentSpec
from agents_app.tooling import run_nested


class HomeworkCheck(BaseModel):
    is_homework: bool
    reasoning: str


homework_check_agent = Agent[ChatContext](
    name="Homework check",
    instructions=(
        "You screen messages sent to a homework tutor for math and history. Decide whether the "
        "latest user message is a homework or study question in math or history, or a follow-up "
        "to one (use the earlier messages for context; greetings and thanks inside a homework "
        "conversation count as homework). Anything else (other subjects, chit-chat, requests "
        "to do unrelated tasks) is not homework. Give a one-sentence reasoning."
    ),
    output_type=HomeworkCheck,
)


@input_guardrail(name="homework", run_in_parallel=False)
async def homework_guardrail(
    ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext], input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    # Not in parallel: a question that is not homework must not be answered or handed off
    # (and streamed to the user) before the check trips.
    # The new message comes last; the earlier ones tell a follow-up ("and 2x = 8?") apart.
    earlier = recent_conversation(input[:-1]) if isinstance(input, list) else ""
    prompt = f"Earlier messages:\n{earlier or '(none)'}\n\nLatest user message:\n{latest_user_text(input)}"
    result = await run_nested(homework_check_agent, prompt, ctx=ctx, max_turns=1)
    check = result.final_output_as(HomeworkCheck)
    return GuardrailFunctionOutput(
        output_info={
            "message": "I can only help with math and history homework. For anything else, start a "
            "conversation with the Assistant.",
            "reasoning": check.reasoning,
        },
        tripwire_triggered=not check.is_homework,
    )


GUARDRAILS = [*INPUT_GUARDRAILS, homework_guardrail]

math_tutor = Agent[ChatContext](
    name="Math Tutor",
    handoff_description="Specialist for math homework: arithmetic, algebra, geometry, calculus, statistics.",
    instructions=(
        "You help students with math homework. Explain your reasoning step by step and include a "
        "worked example. Guide the student towards the answer rather than only giving it. Use "
        "Markdown; write formulas in plain text or inline code. If the student moves on to a "
        "history question, hand off to the History Tutor."
    ),
    input_guardrails=GUARDRAILS,
)

history_tutor = Agent[ChatContext](
    name="History Tutor",
    handoff_description="Specialist for history homework: events, people, causes and consequences, sources.",
    instructions=(
        "You help students with history homework. Explain events and their context clearly, give "
        "dates, and distinguish established facts from interpretations. If the student moves on "
        "to a math question, hand off to the Math Tutor."
    ),
    input_guardrails=GUARDRAILS,
)

math_tutor.handoffs = [history_tutor]
history_tutor.handoffs = [math_tutor]

triage_agent = Agent[ChatContext](
    name="Tutor Triage",
    instructions=(
        "You route homework questions. If the question is about math, hand off to the Math Tutor; "
        "if it is about history, hand off to the History Tutor. Do not answer it yourself. If it is "
        "unclear which subject it is, ask one short clarifying question."
    ),
    handoffs=[math_tutor, history_tutor],
    input_guardrails=GUARDRAILS,
)

spec = AgentSpec(
    key="tutor",
    title="Homework tutor",
    description="Math and history homework help: a triage agent hands you to the right tutor. Homework only.",
    agent=triage_agent,
    max_turns=6,
    workflow_name="Homework tutor",
)
