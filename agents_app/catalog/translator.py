"""Translator: an orchestrator that calls other agents as tools (`Agent.as_tool`).

Spanish is available to everyone. French is in beta and enabled for staff only: the tool is
hidden from the model for other users (`is_enabled` reads the user from the run context), so
the model cannot call it or even know it exists. The translator agents answer with a
structured `Translation`; a `custom_output_extractor` hands the orchestrator only the text.

`as_tool` runs the nested agent with the parent's RunConfig (the app's model) and the parent's
Usage object, so the stored reply counts the nested tokens too (tested).

The orchestrator never translates itself: its instructions (a function of the run context)
name only the languages this user has a tool for, and tell it to refuse the others.
"""

from __future__ import annotations

from agents import Agent, AgentBase, ModelSettings, RunContextWrapper, RunResult, RunResultStreaming
from pydantic import BaseModel

from agents_app.context import ChatContext
from agents_app.guardrails import INPUT_GUARDRAILS
from agents_app.registry import AgentSpec
from agents_app.tooling import agent_tool


class Translation(BaseModel):
    text: str
    notes: str  # ambiguities or register choices worth telling the user; may be empty


def _translator(language: str) -> Agent[ChatContext]:
    return Agent[ChatContext](
        name=f"{language} translator",
        instructions=(
            f"Translate the text you are given into {language}. Keep the meaning, tone and "
            "formatting (Markdown, line breaks). Put only the translation in `text`; in `notes`, "
            "briefly mention real ambiguities or register choices, or leave it empty."
        ),
        output_type=Translation,
    )


spanish_agent = _translator("Spanish")
french_agent = _translator("French")


async def translation_text(result: RunResult | RunResultStreaming) -> str:
    """Give the orchestrator the translation (plus notes), not a JSON document to unpick."""
    output = result.final_output
    if isinstance(output, Translation):
        return output.text if not output.notes.strip() else f"{output.text}\n\n(Translator's notes: {output.notes})"
    return str(output)


def french_enabled(ctx: RunContextWrapper[ChatContext], agent: AgentBase) -> bool:
    # French is in beta: staff only.
    return bool(getattr(ctx.context.user, "is_staff", False))


def orchestrator_instructions(ctx: RunContextWrapper[ChatContext], agent: Agent[ChatContext]) -> str:
    available = ["Spanish", *(["French"] if french_enabled(ctx, agent) else [])]
    tools = ", ".join(f"`translate_to_{language.lower()}`" for language in available)
    return (
        "You are a translation desk. You never translate anything yourself: a translation is "
        f"always made by calling a tool ({tools}) with the exact text to translate, and if several "
        "languages are requested, by calling one tool per language. Languages available to this "
        f"user: {' and '.join(available)}. If the user asks for any other language, do not "
        "translate it: say that this language is not available to them and name the available "
        "ones. If there is nothing to translate, say briefly what you can do."
    )


orchestrator = Agent[ChatContext](
    name="Translator",
    instructions=orchestrator_instructions,
    tools=[
        agent_tool(
            spanish_agent,
            tool_name="translate_to_spanish",
            tool_description="Translate a text into Spanish.",
            custom_output_extractor=translation_text,
            max_turns=2,
        ),
        agent_tool(
            french_agent,
            tool_name="translate_to_french",
            tool_description="Translate a text into French.",
            custom_output_extractor=translation_text,
            is_enabled=french_enabled,
            max_turns=2,
        ),
    ],
    # Several languages at once are several calls in one reply.
    model_settings=ModelSettings(parallel_tool_calls=True),
    input_guardrails=INPUT_GUARDRAILS,
)

spec = AgentSpec(
    key="translator",
    title="Translator",
    description="Translates into Spanish by calling translator agents as tools (French is in beta, for staff).",
    agent=orchestrator,
    max_turns=6,
    workflow_name="Translator",
)
