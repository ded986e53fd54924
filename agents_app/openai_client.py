"""The OpenAI client the `openai` provider uses: the SDK's own `AsyncOpenAI`, with one cost
taken out of streamed Responses.

For every event of a streamed response the openai library first validates the JSON against
the whole `ResponseStreamEvent` union (about fifty event models) with pydantic, and builds the
model from that. Most of a reply's events are `response.output_text.delta`: that union
validation was the largest single function in the load benchmark's profile (bench/README.md).
This client picks the event's model by its `type`, the union's own discriminator, and builds
it with the library's own non-validating constructor (`BaseModel.construct`, which builds
nested models too: what the library does for every non-union response it does not validate
strictly). Nested unions inside an event (an output item, the final `Response`) are still
resolved by the library as before.

What the SDK receives is the same: the same classes with the same field values, checked on
recorded streams (tool calls, reasoning, refusals, errors, usage) by
`agents_app/tests/test_openai_client.py`, which runs both parsers and the SDK's `Runner` over
each. An event whose `type` this version does not know, or that is not a JSON object, takes the
library's own path unchanged. `AGENTS_OPENAI_FAST_EVENTS=0` turns it off.
"""

from __future__ import annotations

import functools
from typing import Any, get_args

from openai import AsyncOpenAI
from openai._utils import extract_type_arg, is_annotated_type
from openai.types.responses import ResponseStreamEvent


@functools.cache
def _event_models() -> dict[str, type]:
    """`type` value → event model, read off the library's own union (so it follows upgrades)."""
    union = extract_type_arg(ResponseStreamEvent, 0) if is_annotated_type(ResponseStreamEvent) else ResponseStreamEvent
    models: dict[str, type] = {}
    for model in get_args(union):
        field = model.model_fields.get("type")
        for value in get_args(field.annotation) if field is not None else ():
            models.setdefault(value, model)
    return models


class StreamingOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` that builds streamed Responses events by their discriminator."""

    def _process_response_data(self, *, data: object, cast_to: Any, response: Any) -> Any:
        if cast_to is ResponseStreamEvent and isinstance(data, dict) and not self._strict_response_validation:
            model = _event_models().get(data.get("type"))  # type: ignore[arg-type]
            if model is not None:
                return model.construct(**data)
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)
