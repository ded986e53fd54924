"""The diagnostics agent: tools that fail, hang or need approval on purpose.

Enabled with `AGENTS_DIAGNOSTICS=1`, and then for staff only (`staff_only`: others neither see
it nor create or run conversations with it). Operators use it with the scripted
model to check a deployment end to end (stop, approvals, tool failures across processes);
the fault suite drives it through real daphne processes.
"""

from __future__ import annotations

import asyncio

from agents import Agent, RunContextWrapper

from agents_app.context import ChatContext
from agents_app.registry import AgentSpec
from agents_app.tooling import catalog_tool

TOOL_TIMEOUT_SECONDS = 2.0


@catalog_tool
async def explode(ctx: RunContextWrapper[ChatContext], reason: str = "on purpose") -> str:
    """Raise an error, to check that tool failures are reported and the run goes on.

    Args:
        reason: Text of the error.
    """
    raise RuntimeError(f"diagnostics tool exploded: {reason}")


@catalog_tool(timeout=TOOL_TIMEOUT_SECONDS)
async def sleep_for(ctx: RunContextWrapper[ChatContext], seconds: float) -> str:
    """Sleep, to check tool timeouts and stopping a run while a tool runs.

    Args:
        seconds: How long to sleep.
    """
    await asyncio.sleep(seconds)
    return f"Slept {seconds:g} s."


@catalog_tool(needs_approval=True)
async def issue_refund(ctx: RunContextWrapper[ChatContext], order_number: str, amount: float) -> str:
    """Pretend to refund an order; needs the user's approval first.

    Args:
        order_number: The order to refund.
        amount: Amount in USD.
    """
    return f"Refund of {amount:.2f} USD issued for {order_number} (diagnostics: no money moved)."


agent = Agent[ChatContext](
    name="Diagnostics",
    instructions="You exercise the application's failure paths. Call the tool the user asks for.",
    tools=[explode, sleep_for, issue_refund],
)

spec = AgentSpec(
    key="diagnostics",
    title="Diagnostics",
    description="Tools that fail, hang or need approval on purpose (operators only).",
    agent=agent,
    max_turns=4,
    staff_only=True,
)
