"""The general assistant: time and date tools, prompt kept in a Markdown file."""

from __future__ import annotations

from pathlib import Path

from agents import Agent, RunContextWrapper
from django.utils import timezone

from agents_app.context import ChatContext
from agents_app.guardrails import INPUT_GUARDRAILS
from agents_app.registry import AgentSpec
from agents_app.tooling import catalog_tool

INSTRUCTIONS = (Path(__file__).parent / "assistant.md").read_text()


@catalog_tool(timeout=5)
async def get_current_time(ctx: RunContextWrapper[ChatContext]) -> str:
    """Return the current local time as HH:MM with the time zone name."""
    now = timezone.localtime()
    return f"{now:%H:%M} ({now.tzname()})"


@catalog_tool(timeout=5)
async def get_current_date(ctx: RunContextWrapper[ChatContext]) -> str:
    """Return today's date, e.g. 'Saturday, 21 November 2026'."""
    return f"{timezone.localdate():%A, %d %B %Y}".replace(" 0", " ")


agent = Agent[ChatContext](
    name="Assistant",
    instructions=INSTRUCTIONS,
    tools=[get_current_time, get_current_date],
    # No output guardrail here: the run service holds back the text of guarded agents until
    # the check passed, and this agent, which reads no stored data, keeps streaming live.
    input_guardrails=INPUT_GUARDRAILS,
)

spec = AgentSpec(
    key="assistant",
    title="Assistant",
    description="A general assistant that can tell the time and date.",
    agent=agent,
    max_turns=6,
)
