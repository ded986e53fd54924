"""The real local model through the real Runner: streamed text, a real tool call, a
follow-up turn. Marked `local_model`: `make test` installs the model and runs them (and fails
if it is missing); elsewhere they are skipped, with a reason, when the model is not installed
(see conftest.py). About 20-40 seconds on 2 cores."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool

from agents_app import local

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(300)]

calls: list[str] = []


@function_tool
def get_current_time(timezone: str) -> str:
    """Get the current date and time in a timezone.

    Args:
        timezone: IANA timezone name, e.g. "UTC" or "Europe/Paris".
    """
    calls.append(timezone)
    return f"2031-07-04 09:41 ({timezone})"


async def test_real_local_model_streams_calls_a_tool_and_answers_with_its_result():
    agent = Agent(
        name="Assistant",
        instructions="You are a helpful assistant. Use the tools when they help.",
        tools=[get_current_time],
        model=local.get_model(),
        model_settings=ModelSettings(max_tokens=96),
    )
    calls.clear()

    gaps: list[float] = []

    async def tick() -> None:  # inference runs on a worker thread: the event loop stays free
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            gaps.append(time.monotonic() - started)

    ticker = asyncio.create_task(tick())
    result = Runner.run_streamed(
        agent, "What time is it in UTC right now?", run_config=RunConfig(tracing_disabled=True)
    )
    deltas, called = [], []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
        elif event.type == "run_item_stream_event" and event.name == "tool_called":
            called.append(event.item.raw_item)
    ticker.cancel()

    assert max(gaps) < 1.0, f"the event loop was blocked for {max(gaps):.2f}s"

    assert [c.name for c in called] == ["get_current_time"]
    assert calls and calls[0]  # the tool really ran, with an argument
    assert len(deltas) > 3  # streamed token by token, not in one piece
    assert "".join(deltas).strip() == result.final_output.strip()
    assert "09:41" in result.final_output
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0

    # A second turn of the same conversation reuses the cached prompt prefix.
    follow_up = Runner.run_streamed(
        agent,
        [*result.to_input_list(), {"role": "user", "content": "Thanks! Reply with one short sentence."}],
        run_config=RunConfig(tracing_disabled=True),
    )
    async for _ in follow_up.stream_events():
        pass
    assert follow_up.final_output.strip()
    assert follow_up.context_wrapper.usage.input_tokens_details.cached_tokens > 0


@pytest.mark.django_db(transaction=True)
async def test_whole_app_path_streams_a_real_local_reply_with_a_tool_call(user, settings):
    """Socket → run service → local model → stored message, with the assistant's real tools."""
    from agents_app import providers
    from chat.models import Conversation, Message
    from chat.tests.helpers import connect, of_type, receive_until, send_message

    settings.AGENTS_MODEL_PROVIDER = "local"
    providers.reset()
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    ws = await connect(user)
    try:
        await send_message(ws, conversation, "What time is it right now?")
        events = await receive_until(ws, "run.finished", timeout=240)
    finally:
        await ws.disconnect()
        providers.reset()

    assert events[-1]["status"] == "completed", events[-1]
    called = of_type(events, "tool.called")
    assert [c["name"] for c in called][:1] == ["get_current_time"]
    assert of_type(events, "tool.output")[0]["call_id"] == called[0]["call_id"]
    deltas = of_type(events, "message.delta")
    assert len(deltas) >= 2  # streamed, not delivered in one piece
    reply = await Message.objects.aget(public_id=of_type(events, "message.completed")[0]["message"])
    assert reply.status == Message.Status.COMPLETED and reply.content.strip()
    assert reply.content == "".join(d["delta"] for d in deltas)
    assert reply.model == local.model_label() and reply.total_tokens > 0 and reply.requests >= 2
    assert reply.cost == 0  # a local model costs nothing, and says so (not "unknown")


@function_tool
def lookup_order(order_number: str) -> str:
    """Look up an order by its number.

    Args:
        order_number: The order number, e.g. "QM-10421".
    """
    return f"Order {order_number}: shipped."


async def test_real_local_model_with_a_required_tool_choice_can_only_write_a_valid_call():
    """The grammar: asked something no tool fits, the model must still call an offered tool,
    with the arguments its schema declares (and not invent a tool or write markup)."""
    agent = Agent(
        name="Orders",
        instructions="You help with orders.",
        tools=[lookup_order, get_current_time],
        model=local.get_model(),
        model_settings=ModelSettings(tool_choice="required", max_tokens=64),
        tool_use_behavior="stop_on_first_tool",
    )

    result = await Runner.run(agent, "My parcel QM-51207 is late, where is it?", run_config=RunConfig(tracing_disabled=True))

    [call] = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    assert call.name == "lookup_order"
    assert set(json.loads(call.arguments)) == {"order_number"} and "51207" in json.loads(call.arguments)["order_number"]
    assert result.final_output.startswith("Order ")
