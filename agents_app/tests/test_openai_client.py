"""The `openai` provider's client builds streamed Responses events without validating each one
against the whole event union (`agents_app.openai_client`). What the SDK receives must not
change: the same classes, the same values, the same fields set, the same run.

Both clients read the same recorded streams (`recorded_streams/*.sse`, in the API's wire
format: text with logprobs, function calls with streamed arguments, reasoning summaries, a
refusal, a hosted web search with a citation, an incomplete and a failed response, and an
OpenAI-compatible server's sparser stream with an event type this library does not know) over
the real HTTP client stack; only the transport is replaced by the recording."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import httpx2
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool
from django.test import override_settings
from openai import AsyncOpenAI

from agents_app import providers
from agents_app.openai_client import StreamingOpenAI

RECORDED = pathlib.Path(__file__).parent / "recorded_streams"
STREAMS = sorted(path.stem for path in RECORDED.glob("*.sse"))


def replaying(*names: str) -> httpx2.MockTransport:
    """A transport answering each request with the next recorded stream."""
    queue: Iterator[str] = iter(names)

    def answer(request: httpx2.Request) -> httpx2.Response:
        body = (RECORDED / f"{next(queue)}.sse").read_bytes()
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.MockTransport(answer)


def both_clients(*names: str) -> tuple[AsyncOpenAI, StreamingOpenAI]:
    def make(cls):
        return cls(api_key="test", base_url="http://openai.test/v1", max_retries=0,
                   http_client=httpx2.AsyncClient(transport=replaying(*names)))

    return make(AsyncOpenAI), make(StreamingOpenAI)


async def events_of(client: AsyncOpenAI) -> list:
    stream = await client.responses.create(model="gpt-4.1-mini", input="hi", stream=True)
    return [event async for event in stream]


def as_seen(event) -> tuple:
    """Everything of an event the SDK or our code can observe."""
    return (
        type(event),
        event.model_dump(mode="json", warnings=False),
        event.model_dump(mode="json", exclude_unset=True, warnings=False),
        event.model_extra,
    )


def test_the_recordings_cover_what_a_reply_can_stream():
    assert {"text_with_logprobs", "function_calls", "reasoning_then_text", "refusal", "web_search_with_citation",
            "incomplete", "failed", "compatible_server"} <= set(STREAMS)


@pytest.mark.parametrize("name", STREAMS)
async def test_every_recorded_event_is_the_same_object_as_the_library_builds(name):
    library, streaming = both_clients(name, name)
    expected, got = await events_of(library), await events_of(streaming)

    assert len(got) == len(expected) > 1
    for ours, theirs in zip(got, expected, strict=True):
        assert as_seen(ours) == as_seen(theirs), ours.type


async def test_nested_items_are_models_too_not_dicts():
    _, streaming = both_clients("function_calls")
    events = await events_of(streaming)
    done = next(e for e in events if e.type == "response.output_item.done")
    completed = events[-1]

    assert type(done.item).__name__ == "ResponseFunctionToolCall" and done.item.name == "lookup_order"
    assert completed.response.usage.total_tokens == 1252
    assert [type(item).__name__ for item in completed.response.output] == ["ResponseFunctionToolCall"] * 2


async def test_an_event_type_the_library_does_not_know_takes_the_librarys_own_path():
    library, streaming = both_clients("compatible_server", "compatible_server")
    ours = [e for e in await events_of(streaming) if e.type == "response.vendor_heartbeat"]
    theirs = [e for e in await events_of(library) if e.type == "response.vendor_heartbeat"]

    assert len(ours) == 1 and as_seen(ours[0]) == as_seen(theirs[0])


@function_tool
def lookup_order(order_number: str) -> str:
    """Look up an order.

    Args:
        order_number: The order number, like QM-10388.
    """
    return f"{order_number}: shipped"


@function_tool
def current_time(timezone: str) -> str:
    """The current time in a timezone.

    Args:
        timezone: An IANA timezone name.
    """
    return "14:05"


async def run_streamed_with(client: AsyncOpenAI) -> tuple[list, object]:
    agent = Agent(
        name="Assistant", instructions="Help.", tools=[lookup_order, current_time],
        model=OpenAIResponsesModel(model="gpt-4.1-mini", openai_client=client),
        model_settings=ModelSettings(),
    )
    result = Runner.run_streamed(agent, "Where is QM-10388, and what time is it?", run_config=RunConfig(tracing_disabled=True))
    seen = []
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            seen.append(("raw", as_seen(event.data)))
        elif event.type == "run_item_stream_event":
            seen.append(("item", event.name, event.item.type, event.item.to_input_item()))
        else:
            seen.append(("agent", event.new_agent.name))
    return seen, result


async def test_the_sdk_runs_a_tool_turn_then_a_reply_exactly_as_with_its_own_client():
    library, streaming = both_clients("function_calls", "text_with_logprobs", "function_calls", "text_with_logprobs")
    expected_events, expected = await run_streamed_with(library)
    events, result = await run_streamed_with(streaming)

    assert events == expected_events
    assert result.final_output == expected.final_output == "The time in Oslo is 14:05."
    assert result.to_input_list() == expected.to_input_list()
    assert result.context_wrapper.usage == expected.context_wrapper.usage
    assert result.context_wrapper.usage.requests == 2


@pytest.mark.parametrize("name", ["failed", "incomplete", "refusal", "reasoning_then_text", "web_search_with_citation"])
async def test_the_sdk_ends_every_other_recorded_turn_the_same_way(name):
    outcomes = []
    for client in both_clients(name, name):
        agent = Agent(name="Assistant", instructions="Help.", model=OpenAIResponsesModel(model="gpt-4.1-mini", openai_client=client))
        result = Runner.run_streamed(agent, "hi", run_config=RunConfig(tracing_disabled=True))
        try:
            events = [as_seen(e.data) for e in [e async for e in result.stream_events()] if e.type == "raw_response_event"]
            outcomes.append(("ok", events, result.final_output, result.to_input_list()))
        except Exception as exc:  # the SDK's own verdict on the recording, compared below
            outcomes.append(("raised", type(exc), str(exc)))

    assert outcomes[0] == outcomes[1]


def test_the_openai_provider_uses_it_by_default_and_the_setting_turns_it_off():
    providers.reset()
    try:
        with override_settings(AGENTS_MODEL_PROVIDER="openai", OPENAI_API_KEY="test", OPENAI_BASE_URL="http://openai.test/v1"):
            assert isinstance(providers.openai_client(), StreamingOpenAI)
            providers.reset()
            with override_settings(AGENTS_OPENAI_FAST_EVENTS=False):
                client = providers.openai_client()
                assert type(client) is AsyncOpenAI and str(client.base_url) == "http://openai.test/v1/"
    finally:
        providers.reset()
