"""The real local model through the real Runner: streamed text, a real tool call, a
follow-up turn. Runs only where the model is installed (`manage.py local_model install`);
about 20-40 seconds on 2 cores."""

from __future__ import annotations

import asyncio
import time

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool

from agents_app import local

pytestmark = [
    pytest.mark.skipif(not local.is_installed(), reason="local model not installed: manage.py local_model install"),
    pytest.mark.timeout(300),
]

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
