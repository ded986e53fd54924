"""Research assistant: a manager (planner → parallel searches → writer) behind one tool.

The chat-facing agent has a single tool, `research(topic)`, which runs `ResearchManager` and
returns its `ReportData`; `tool_use_behavior` makes that report the run's final output, so the
chat stores it as a structured message and renders templates/chat/cards/ReportData.html.

`output_type=ReportData` is required, not decoration: with a plain-text output type the SDK
turns a tool's final output into `str(...)`, and the card would be lost. The stop is a
function rather than "stop_on_first_tool": a failed research ("Tool failed: …") goes back to
the model, which then answers with a short report saying so instead of an empty message.
"""

from __future__ import annotations

from typing import Any

from agents import (
    Agent,
    FunctionToolResult,
    ModelSettings,
    RunContextWrapper,
    ToolsToFinalOutputResult,
)

from agents_app.context import ChatContext
from agents_app.guardrails import INPUT_GUARDRAILS, OUTPUT_GUARDRAILS
from agents_app.registry import AgentSpec
from agents_app.tooling import catalog_tool

from .manager import ResearchManager
from .writer import ReportData

# Planning, up to five searches and the writing are several model calls in a row.
RESEARCH_TIMEOUT = 240.0


@catalog_tool(timeout=RESEARCH_TIMEOUT)
async def research(ctx: RunContextWrapper[ChatContext], topic: str) -> ReportData:
    """Research a topic (plan searches, run them, write a report) and return the report.

    Args:
        topic: What to research, as a complete question or description, e.g. "How does Quillmate sync work offline?".
    """
    return await ResearchManager(ctx).run(topic)


def stop_on_report(ctx: RunContextWrapper[Any], results: list[FunctionToolResult]) -> ToolsToFinalOutputResult:
    """The report is the answer: stop there, without a model call to paraphrase it."""
    for result in results:
        if isinstance(result.output, ReportData):
            return ToolsToFinalOutputResult(is_final_output=True, final_output=result.output)
    return ToolsToFinalOutputResult(is_final_output=False, final_output=None)


agent = Agent[ChatContext](
    name="Research Assistant",
    instructions=(
        "You are a research assistant. For every request, call `research` once with a complete "
        "description of what the user wants to know, including relevant context from the "
        "conversation. Only if the `research` tool fails, answer yourself with a report whose "
        "summary says the research failed and suggests trying again, with an empty report and "
        "no follow-up questions."
    ),
    tools=[research],
    # Every request is a research: the first step is always the tool (the SDK resets this after it).
    model_settings=ModelSettings(tool_choice="required"),
    tool_use_behavior=stop_on_report,
    output_type=ReportData,
    input_guardrails=INPUT_GUARDRAILS,
    output_guardrails=OUTPUT_GUARDRAILS,
)

spec = AgentSpec(
    key="research",
    title="Research",
    description="Plans several searches (help centre, plus the web on OpenAI), runs them in parallel and writes a report.",
    agent=agent,
    max_turns=4,
    workflow_name="Research",
)
