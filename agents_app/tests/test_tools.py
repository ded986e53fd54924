"""Catalog tool defaults (friendly failures, timeouts), seen the way a user sees them: as
`tool.output` events in the chat, with the run carrying on."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from agents import FunctionTool
from agents.testing import function_call
from agents.tool_context import ToolContext

from agents_app import history
from agents_app.context import ChatContext
from agents_app.registry import all_specs
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    turn,
)
from agents_app.tooling import TOOL_FAILURE_PREFIX, ToolError, catalog_tool
from chat.tests.helpers import extra_tools, stored_history
from chat.tests.scripts import streamed

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)


@catalog_tool
async def flaky_lookup(query: str) -> str:
    """Look something up.

    Args:
        query: What to look up.
    """
    raise ConnectionError(f"db at 10.0.0.7 refused connection for {query}")


@catalog_tool(timeout=0.05)
async def stuck_lookup() -> str:
    """Look something up, slowly."""
    await asyncio.sleep(30)
    return "never"


@catalog_tool
async def picky_lookup(code: str) -> str:
    """Look up a code.

    Args:
        code: A product code.
    """
    raise ToolError(f"no product has the code {code!r}")


@chat_db
async def test_crashing_tool_shows_as_failed_and_the_model_gets_a_safe_text(user, script, caplog):
    conversation = await new_conversation(user, "assistant")
    steps = [[function_call("flaky_lookup", {"query": "q"}, call_id="call_flaky")], streamed("Sorry, ", "the lookup is down.")]
    with extra_tools("assistant", flaky_lookup), script(steps) as model, caplog.at_level(logging.WARNING, "agents_app.tooling"):
        events = await turn(user, conversation, "Look up q")

    output = one(events, "tool.output")
    assert output["failed"] is True and output["output"].startswith(TOOL_FAILURE_PREFIX)
    assert "10.0.0.7" not in output["output"]
    # The model was told, in the same words, and answered the user.
    sent = [item for item in model.last_call.input if item.get("type") == "function_call_output"]
    assert sent[0]["output"] == output["output"]
    reply = await reply_of(events)
    assert reply.status == "completed" and reply.content == "Sorry, the lookup is down."
    assert reply.activity[0]["status"] == "failed"
    # The real error is in the log for the operators.
    assert any("10.0.0.7" in str(record.exc_info[1]) for record in caplog.records if record.exc_info)


@chat_db
async def test_tool_that_times_out_shows_as_failed_and_the_run_goes_on(user, script):
    conversation = await new_conversation(user, "assistant")
    steps = [[function_call("stuck_lookup", {}, call_id="call_stuck")], streamed("It took too long, sorry.")]
    with extra_tools("assistant", stuck_lookup), script(steps):
        events = await turn(user, conversation, "Look it up")

    output = one(events, "tool.output")
    assert output["failed"] is True
    assert output["output"] == f"{TOOL_FAILURE_PREFIX} stuck_lookup took too long (over 0.05 s) and was stopped."
    assert one(events, "run.finished")["status"] == "completed"
    assert history.problems(await stored_history(conversation)) == []


@chat_db
async def test_tool_error_message_reaches_the_model_as_written(user, script):
    conversation = await new_conversation(user, "assistant")
    steps = [[function_call("picky_lookup", {"code": "X1"}, call_id="call_picky")], streamed("No such product.")]
    with extra_tools("assistant", picky_lookup), script(steps):
        events = await turn(user, conversation, "Find X1")

    assert one(events, "tool.output")["output"] == f"{TOOL_FAILURE_PREFIX} no product has the code 'X1'"


@chat_db
async def test_invalid_tool_arguments_are_reported_so_the_model_can_correct_them(user, script):
    conversation = await new_conversation(user, "assistant")
    steps = [[function_call("picky_lookup", {"sku": 12}, call_id="call_bad_args")], streamed("Let me retry.")]
    with extra_tools("assistant", picky_lookup), script(steps):
        events = await turn(user, conversation, "Find it")

    output = one(events, "tool.output")
    assert output["failed"] is True and "arguments for picky_lookup were invalid" in output["output"]


def test_tools_must_be_async_so_their_timeout_can_apply():
    def blocking() -> str:
        """Blocks."""
        return ""

    with pytest.raises(TypeError, match="async def"):
        catalog_tool(blocking)


@chat_db
async def test_every_catalog_tool_has_a_timeout_and_the_friendly_failure(user):
    """A tool added without `catalog_tool` / `agent_tool` would fail here."""
    conversation = await new_conversation(user, "assistant")
    tools = {
        tool.name: tool
        for spec in all_specs()
        for agent in spec.agents()
        for tool in agent.tools
        if isinstance(tool, FunctionTool)
    }
    assert {"get_current_time", "create_support_ticket", "research", "translate_to_spanish", "lookup_order"} <= set(tools)
    for name, tool in tools.items():
        assert tool.timeout_seconds, name
        ctx = ToolContext(
            context=ChatContext(user=user, conversation=conversation),
            tool_name=name,
            tool_call_id="call_check",
            tool_arguments="{not json",
        )
        output = await tool.on_invoke_tool(ctx, "{not json")
        assert output.startswith(TOOL_FAILURE_PREFIX), (name, output)
        json.dumps(output)  # plain text, safe to show
