"""Model steps for `agents.testing.ScriptedModel` that stream like a real model: text in
several deltas, and streams that pause until the test lets them go (to stop, disconnect or
race in the middle of a reply)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agents.testing import ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage

USAGE = Usage(requests=1, input_tokens=42, output_tokens=7, total_tokens=49)


def streamed(*pieces: str, gate: asyncio.Event | None = None, after: int = 1, usage=USAGE) -> ModelStep:
    """A text reply streamed as `pieces`. With `gate`, the stream pauses after `after` pieces
    until the gate is set (forever, if nobody sets it)."""
    text = "".join(pieces)

    async def events(call) -> AsyncIterator:
        inner = ScriptedModel([[assistant_message(text)]], default_usage=usage)
        async for event in inner.stream_response(
            call.system_instructions,
            call.input,
            call.model_settings,
            call.tools,
            call.output_schema,
            call.handoffs,
            call.tracing,
            previous_response_id=None,
            conversation_id=None,
            prompt=None,
        ):
            if event.type != "response.output_text.delta":
                yield event
                continue
            for index, piece in enumerate(pieces):
                if gate is not None and index == after:
                    await gate.wait()
                yield event.model_copy(update={"delta": piece})

    return ModelStep.stream(events, output=[assistant_message(text)], usage=usage)
