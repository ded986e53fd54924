"""`LocalModel`, the SDK adapter, driven by a scripted inference backend.

`FakeBackend` stands in for llama.cpp only: it yields scripted token strings from a worker
thread exactly as `LlamaBackend` does, so the prompt building, tool-call parsing, Responses
events, queueing and cancellation are the real ones, and `Runner.run_streamed` with a real
function tool consumes the stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.models.interface import ModelTracing

from agents_app import progress
from agents_app.local import chatml
from agents_app.local.backend import GenerationStats
from agents_app.local.model import LocalModel
from tests.waiting import eventually


class FakeBackend:
    """Yields scripted pieces for each generation; tokens are the prompt's UTF-8 bytes."""

    def __init__(self, scripts: list[list[str]], *, delay: float = 0.0, n_ctx: int = 100_000) -> None:
        self.scripts = list(scripts)
        self.delay = delay
        self.n_ctx = n_ctx
        self.prompts: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.loads = 0
        self.active = 0
        self.max_active = 0
        self.yielded = 0
        self.stopped_at: float | None = None
        self.threads: set[str] = set()

    def load(self) -> None:
        self.loads += 1

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    def generate(self, tokens, *, max_tokens, temperature, top_p, constraint, cancel):
        self.prompts.append(bytes(tokens).decode())
        self.calls.append(
            {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "constraint": constraint}
        )
        self.threads.add(threading.current_thread().name)
        pieces = self.scripts.pop(0)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        produced = 0
        try:
            for piece in pieces:
                if self.delay:
                    time.sleep(self.delay)
                if cancel.is_set():
                    return GenerationStats(completion_tokens=produced, finish_reason="cancelled")
                produced += 1
                self.yielded += 1
                yield piece
            return GenerationStats(completion_tokens=produced)
        finally:
            self.active -= 1
            self.stopped_at = time.monotonic()


@function_tool
def get_current_time(timezone: str) -> str:
    """Get the current time.

    Args:
        timezone: IANA timezone name, e.g. "Europe/Paris".
    """
    return f"14:05 in {timezone}"


CALL_PIECES = ["<tool_call>", "\n", '{"name": "get_current_time", ', '"arguments": {"timezone": "UTC", "format": "24h"}}',
               "\n", "</tool_call>"]  # fmt: skip
ANSWER_PIECES = ["It", " is", " 14", ":", "05", " in", " UTC", "."]
NO_TRACING = RunConfig(tracing_disabled=True)


def make_agent(model: LocalModel, **kwargs: Any) -> Agent:
    kwargs.setdefault("tools", [get_current_time])
    return Agent(name="Assistant", instructions="Be brief.", model=model, **kwargs)


async def run_and_collect(agent: Agent, input: Any) -> tuple[Any, list[Any]]:
    result = Runner.run_streamed(agent, input, run_config=NO_TRACING)
    events = [event async for event in result.stream_events()]
    return result, events


async def test_tool_call_turn_then_answer_turn_with_tools_withheld_through_the_runner():
    backend = FakeBackend([CALL_PIECES, ANSWER_PIECES])
    model = LocalModel(backend, label="local/test", emit_interval=0.0)

    result, events = await run_and_collect(make_agent(model), "What time is it in UTC?")

    called = [e.item.raw_item for e in events if e.type == "run_item_stream_event" and e.name == "tool_called"]
    outputs = [e.item.raw_item for e in events if e.type == "run_item_stream_event" and e.name == "tool_output"]
    deltas = [
        e.data.delta for e in events if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert [(c.name, c.arguments) for c in called] == [("get_current_time", '{"timezone": "UTC"}')]  # "format" dropped
    assert outputs[0]["call_id"] == called[0].call_id
    assert called[0].call_id.startswith("call_")
    assert deltas == ANSWER_PIECES  # one delta per generated piece
    assert result.final_output == "It is 14:05 in UTC."
    first_prompt, second_prompt = backend.prompts
    assert "<tools>" in first_prompt and '"name": "get_current_time"' in first_prompt
    assert "<tools>" not in second_prompt  # withheld on the turn right after a tool result
    assert '<tool_call>\n{"name": "get_current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>' in second_prompt
    assert "<tool_response>\n14:05 in UTC\n</tool_response>" in second_prompt
    assert second_prompt.endswith("<|im_start|>assistant\n")
    usage = result.context_wrapper.usage
    assert usage.requests == 2
    assert usage.input_tokens == len(first_prompt.encode()) + len(second_prompt.encode())
    assert usage.output_tokens == len(CALL_PIECES) + len(ANSWER_PIECES)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert backend.loads == 1
    assert backend.threads and all(name.startswith("local-model") for name in backend.threads)


async def test_tokens_are_sent_at_once_then_batched_while_they_come_faster_than_the_interval():
    backend = FakeBackend([ANSWER_PIECES])
    model = LocalModel(backend, label="local/test", emit_interval=60.0)

    _, events = await run_and_collect(make_agent(model, tools=[]), "Time?")

    deltas = [
        e.data.delta for e in events if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert deltas == ["It", " is 14:05 in UTC."]  # the first token without delay, the rest as one chunk


async def test_each_response_is_a_complete_responses_stream():
    backend = FakeBackend([["Let me check.\n", *CALL_PIECES], ANSWER_PIECES])
    model = LocalModel(backend, label="local/test")

    _, events = await run_and_collect(make_agent(model), "Time?")

    raw = [e.data for e in events if e.type == "raw_response_event"]
    responses: list[list[Any]] = []
    for event in raw:
        if event.type == "response.created":
            responses.append([])
        responses[-1].append(event)
    assert len(responses) == 2
    for response_events in responses:
        types = [e.type for e in response_events]
        assert types[:2] == ["response.created", "response.in_progress"]
        assert types[-1] == "response.completed"
        assert [e.sequence_number for e in response_events] == list(range(len(response_events)))
        assert types.count("response.output_item.added") == types.count("response.output_item.done")
        completed = response_events[-1].response
        assert completed.status == "completed" and completed.model == "local/test"
        assert completed.usage.total_tokens == completed.usage.input_tokens + completed.usage.output_tokens > 0
    first = responses[0][-1].response
    assert [item.type for item in first.output] == ["message", "function_call"]
    assert first.output[0].content[0].text == "Let me check."
    assert first.output[1].arguments == '{"timezone": "UTC"}'


async def test_call_ids_are_unique_across_runs_of_one_conversation():
    backend = FakeBackend([CALL_PIECES, ANSWER_PIECES, CALL_PIECES, ANSWER_PIECES])
    model = LocalModel(backend, label="local/test")
    agent = make_agent(model)

    first, _ = await run_and_collect(agent, "Time?")
    second, _ = await run_and_collect(agent, [*first.to_input_list(), {"role": "user", "content": "And now?"}])

    call_ids = [item["call_id"] for item in second.to_input_list() if item.get("type") == "function_call"]
    assert len(call_ids) == 2 and len(set(call_ids)) == 2
    # Asking again in a new user turn calls the tool again (only repeats within a turn are dropped).
    assert second.final_output == "It is 14:05 in UTC."


async def test_repeating_the_answered_call_is_dropped_and_the_model_asked_to_answer():
    backend = FakeBackend([CALL_PIECES, CALL_PIECES, ANSWER_PIECES])
    model = LocalModel(backend, label="local/test")

    result, events = await run_and_collect(make_agent(model), "Time?")

    assert result.final_output == "It is 14:05 in UTC."
    assert len([e for e in events if e.type == "run_item_stream_event" and e.name == "tool_called"]) == 1
    assert result.context_wrapper.usage.requests == 2  # the retry is part of the same request
    assert "<tools>" not in backend.prompts[2] and "<tool_call>" not in backend.prompts[2]


async def test_a_model_stuck_repeating_the_call_is_stopped_early_and_answers_from_plain_text_results():
    loop = ['{"name": "get_current_time", "arguments": {"timezone": "UTC"}}', "\n"] * 500
    backend = FakeBackend([CALL_PIECES, loop, ANSWER_PIECES], delay=0.001)
    model = LocalModel(backend, label="local/test")

    result, _ = await run_and_collect(make_agent(model), "Time?")

    assert result.final_output == "It is 14:05 in UTC."
    assert backend.yielded < len(CALL_PIECES) + 50 + len(ANSWER_PIECES)  # the 1000-piece loop was cut short
    retry_prompt = backend.prompts[2]
    assert "<tool_call>" not in retry_prompt and "<tool_response>" not in retry_prompt
    assert 'Tool results:\nget_current_time({"timezone": "UTC"}) returned: 14:05 in UTC' in retry_prompt


async def test_tool_choice_none_offers_and_honours_no_tools():
    backend = FakeBackend([CALL_PIECES])
    model = LocalModel(backend, label="local/test")

    result, events = await run_and_collect(make_agent(model, model_settings=ModelSettings(tool_choice="none")), "Time?")

    assert "<tools>" not in backend.prompts[0]
    assert not [e for e in events if e.type == "run_item_stream_event" and e.name == "tool_called"]
    assert '"name": "get_current_time"' in result.final_output  # shown as text, not run


async def test_non_streamed_run_uses_the_same_path():
    backend = FakeBackend([CALL_PIECES, ANSWER_PIECES])
    model = LocalModel(backend, label="local/test")

    result = await Runner.run(make_agent(model), "Time?", run_config=NO_TRACING)

    assert result.final_output == "It is 14:05 in UTC."
    assert result.context_wrapper.usage.requests == 2


async def test_model_settings_temperature_and_max_tokens_are_honoured():
    backend = FakeBackend([["Hi."], ["Hi."]])
    model = LocalModel(backend, label="local/test")

    await run_and_collect(make_agent(model), "Hello")
    await run_and_collect(
        make_agent(model, model_settings=ModelSettings(temperature=0.7, max_tokens=64, top_p=0.9)), "Hello"
    )

    assert backend.calls[0]["temperature"] == 0.0 and backend.calls[0]["max_tokens"] == 1024
    assert backend.calls[1]["temperature"] == 0.7 and backend.calls[1]["max_tokens"] == 64
    assert backend.calls[1]["top_p"] == 0.9


async def test_input_items_of_every_shape_become_chatml():
    backend = FakeBackend([["ok"]])
    model = LocalModel(backend, label="local/test")
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "Hi, "}, {"type": "input_text", "text": "there"}]},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        },
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None},
        {"type": "function_call", "call_id": "call_a", "name": "get_current_time", "arguments": '{"timezone": "UTC"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "14:05 in UTC"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]

    await run_and_collect(make_agent(model), history)

    assert backend.prompts[0].split("<|im_end|>\n", 1)[1] == (
        "<|im_start|>user\nHi, there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nTime?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_current_time", "arguments": {"timezone": "UTC"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n14:05 in UTC\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert backend.prompts[0].startswith("<|im_start|>system\nBe brief.")


async def test_calls_and_results_of_earlier_turns_are_left_out_of_the_prompt():
    backend = FakeBackend([["ok"]])
    model = LocalModel(backend, label="local/test")
    history = [
        {"role": "user", "content": "Time?"},
        {"type": "function_call", "call_id": "call_a", "name": "get_current_time", "arguments": '{"timezone": "UTC"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "14:05 in UTC"},
        {"role": "assistant", "content": "It is 14:05."},
        {"role": "user", "content": "Thanks"},
    ]

    await run_and_collect(make_agent(model), history)

    prompt = backend.prompts[0]
    assert "14:05 in UTC" not in prompt and "<tool_response>" not in prompt.split("# Tools", 1)[-1].split("</tools>")[-1]
    assert prompt.endswith(
        "<|im_start|>user\nTime?<|im_end|>\n<|im_start|>assistant\nIt is 14:05.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"
    )


def test_system_prompt_lists_tools_with_single_braces_in_the_example_call():
    messages = chatml.items_to_messages("Be brief.", "Hi")
    tool = chatml.tool_signature("get_current_time", "Get the time.", {"type": "object", "properties": {}})

    prompt = chatml.render_prompt(messages, [tool])

    assert '<tools>\n{"type": "function", "function": {"name": "get_current_time"' in prompt
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>' in prompt
    assert "{{" not in prompt


async def test_long_history_drops_the_oldest_exchanges_to_fit_the_context():
    backend = FakeBackend([["ok"]], n_ctx=1200)
    model = LocalModel(backend, label="local/test")
    history = []
    for i in range(10):
        history += [
            {"role": "user", "content": f"question {i} " + "x" * 100},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    history.append({"role": "user", "content": "last question"})

    await run_and_collect(make_agent(model, tools=[]), history)

    prompt = backend.prompts[0]
    assert len(prompt.encode()) <= 1200 - 256
    assert "last question" in prompt and "question 9" in prompt
    assert "question 0" not in prompt


async def test_requests_queue_one_at_a_time_and_report_their_position():
    backend = FakeBackend([["a"] * 20, ["b"] * 5], delay=0.01)
    model = LocalModel(backend, label="local/test")
    reports: dict[str, list[tuple[str, dict]]] = {"first": [], "second": []}

    async def run(name: str) -> str:
        async def reporter(stage: str, data: dict) -> None:
            reports[name].append((stage, data))

        with progress.reporting_to(reporter):
            result, _ = await run_and_collect(make_agent(model, tools=[]), "Hi")
        return result.final_output

    first = asyncio.create_task(run("first"))
    await eventually(lambda: backend.yielded, what="the first request to be generating")
    second = asyncio.create_task(run("second"))

    assert await first == "a" * 20 and await second == "b" * 5
    assert backend.max_active == 1
    assert reports["first"] == [("generating", {"loading": True})]
    assert reports["second"] == [("queued", {"position": 1}), ("generating", {"loading": False})]


async def test_cancelling_the_awaiting_task_stops_generation_and_frees_the_model():
    backend = FakeBackend([["word "] * 2000, ["next"]], delay=0.01)
    model = LocalModel(backend, label="local/test")
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for event in model.stream_response(
            None, "Talk", ModelSettings(), [], None, [], ModelTracing.DISABLED, previous_response_id=None,
            conversation_id=None, prompt=None,
        ):  # fmt: skip
            if event.type == "response.output_text.delta":
                first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 5)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The next request gets the model as soon as the worker noticed (within a token or two).
    result, _ = await asyncio.wait_for(run_and_collect(make_agent(model, tools=[]), "Hi"), 5)
    assert result.final_output == "next"
    assert backend.stopped_at is not None and backend.stopped_at - cancelled_at < 0.5
    assert backend.yielded < 100


async def test_runner_cancel_stops_the_local_generation():
    backend = FakeBackend([["word "] * 2000], delay=0.01)
    model = LocalModel(backend, label="local/test")

    result = Runner.run_streamed(make_agent(model, tools=[]), "Talk", run_config=NO_TRACING)
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            cancelled_at = time.monotonic()
            result.cancel()

    await eventually(lambda: backend.stopped_at is not None and backend.active == 0, what="generation to stop")
    assert backend.stopped_at is not None and backend.stopped_at - cancelled_at < 0.5
    assert backend.active == 0
    assert backend.yielded < 100


async def test_a_waiting_request_that_is_cancelled_leaves_the_queue():
    backend = FakeBackend([["a"] * 30, ["c"]], delay=0.01)
    model = LocalModel(backend, label="local/test")
    agent = make_agent(model, tools=[])

    first = asyncio.create_task(run_and_collect(agent, "1"))
    await eventually(lambda: backend.yielded, what="the first request to be generating")
    waiting = asyncio.create_task(run_and_collect(agent, "2"))
    await eventually(lambda: model.slot.waiting == 1, what="the second request to queue")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    assert model.slot.waiting == 0
    (first_result, _), (third_result, _) = await first, await run_and_collect(agent, "3")
    assert first_result.final_output == "a" * 30 and third_result.final_output == "c"


async def test_backend_error_reaches_the_runner_and_frees_the_model():
    class Broken(FakeBackend):
        def generate(self, tokens, **kwargs):
            raise RuntimeError("llama exploded")

    model = LocalModel(Broken([]), label="local/test")

    with pytest.raises(RuntimeError, match="llama exploded"):
        await run_and_collect(make_agent(model, tools=[]), "Hi")
    assert model.slot.waiting == 0
    await asyncio.wait_for(model.slot.acquire(), 1)  # free again


async def test_handoffs_are_offered_as_tools_and_followed():
    backend = FakeBackend([['{"name": "transfer_to_billing", "arguments": {}}'], ["Billing", " here."]])
    model = LocalModel(backend, label="local/test")
    billing = Agent(name="Billing", instructions="Handle invoices.", model=model)
    triage = Agent(name="Triage", instructions="Route.", model=model, handoffs=[billing])

    result, _ = await run_and_collect(triage, "My invoice is wrong.")

    assert '"name": "transfer_to_billing"' in backend.prompts[0]
    assert result.last_agent.name == "Billing"
    assert result.final_output == "Billing here."


async def test_structured_output_gets_the_schema_in_the_prompt_and_a_grammar_without_tools():
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    backend = FakeBackend([['{"name": "Paris", ', '"country": "France"}']])
    model = LocalModel(backend, label="local/test")

    result, _ = await run_and_collect(
        Agent(name="A", instructions="Extract.", model=model, output_type=City), "Paris, France"
    )

    assert result.final_output == City(name="Paris", country="France")
    constraint = backend.calls[0]["constraint"]
    assert constraint.output_schema["properties"].keys() == {"name", "country"} and not constraint.calls
    assert "matches this JSON schema" in backend.prompts[0]


def test_kv_snapshots_are_found_by_longest_shared_prefix_and_evicted_oldest_first():
    from agents_app.local.backend import SnapshotCache

    cache = SnapshotCache(budget_bytes=10)
    cache.add((1, 2, 3), b"abc")
    cache.add((1, 2, 3, 4, 5), b"abcde")  # supersedes (1, 2, 3): same conversation, later turn
    cache.add((1, 9), b"xy")

    assert len(cache) == 2
    best = cache.best([1, 2, 3, 4, 7])
    assert best is not None and best.tokens == (1, 2, 3, 4, 5) and best.shared == 4
    assert cache.best([5, 5]) is None
    cache.add((7, 7, 7), b"1234")  # over budget: the least recently used entry (1, 9) goes
    assert cache.best([1, 9]).tokens == (1, 2, 3, 4, 5)


async def test_shutdown_at_exit_stops_a_running_generation_and_frees_the_backend():
    class Closable(FakeBackend):
        closed = False

        def close(self):
            self.closed = True

    backend = Closable([["word "] * 2000], delay=0.01)
    model = LocalModel(backend, label="local/test")
    run = asyncio.create_task(run_and_collect(make_agent(model, tools=[]), "Talk"))
    while not backend.yielded:
        await asyncio.sleep(0.01)

    started = time.monotonic()
    await asyncio.to_thread(model.shutdown, 5.0)

    assert time.monotonic() - started < 1.0
    assert backend.active == 0 and backend.closed
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


async def test_preloading_loads_once_on_the_worker_thread():
    class Recording(FakeBackend):
        def load(self):
            super().load()
            self.threads.add(threading.current_thread().name)

    backend = Recording([["Hi."]])
    model = LocalModel(backend, label="local/test")

    await asyncio.to_thread(model.load, 5)
    await run_and_collect(make_agent(model, tools=[]), "Hello")

    assert backend.loads == 1
    assert backend.threads == {"local-model"}


# --- what the grammar lets the model write (see test_local_grammar.py for the grammar itself)


@function_tool
def get_current_date() -> str:
    """Get today's date."""
    return "Tuesday"


async def test_with_tools_offered_the_output_is_constrained_to_their_calls_or_an_answer():
    backend = FakeBackend([CALL_PIECES, ANSWER_PIECES])
    model = LocalModel(backend, label="local/test")

    await run_and_collect(make_agent(model), "Time?")

    offered, after_result = (call["constraint"] for call in backend.calls)
    assert [tool.name for tool in offered.calls] == ["get_current_time"] and offered.text
    assert offered.calls[0].parameters["required"] == ["timezone"]  # the tool's own schema
    # Right after the tool result: an answer only, no call.
    assert after_result.calls == () and after_result.text


@pytest.mark.parametrize(
    ("tool_choice", "calls", "text"),
    [
        ("required", ["get_current_time", "get_current_date"], False),
        ("get_current_date", ["get_current_date"], False),
        ("none", [], True),
        ("auto", ["get_current_time", "get_current_date"], True),
    ],
)
async def test_tool_choice_decides_what_the_first_output_may_be(tool_choice, calls, text):
    script = ['<tool_call>\n{"name": "get_current_date", "arguments": {}}\n</tool_call>'] if calls else ["Hi."]
    backend = FakeBackend([script, ["Tuesday."]])
    model = LocalModel(backend, label="local/test")
    agent = make_agent(model, tools=[get_current_time, get_current_date], model_settings=ModelSettings(tool_choice=tool_choice))

    await run_and_collect(agent, "What day is it?")

    first = backend.calls[0]["constraint"]
    assert [tool.name for tool in first.calls] == calls and first.text is text
    if calls:  # the SDK resets the tool choice after the call: the answer is free again
        assert backend.calls[1]["constraint"].text


async def test_a_structured_answer_or_a_call_with_tools_and_an_output_type():
    from pydantic import BaseModel

    class Answer(BaseModel):
        day: str

    backend = FakeBackend([['{"day": "Tuesday"}']])
    model = LocalModel(backend, label="local/test")

    result, _ = await run_and_collect(make_agent(model, tools=[get_current_date], output_type=Answer), "Day?")

    constraint = backend.calls[0]["constraint"]
    assert [tool.name for tool in constraint.calls] == ["get_current_date"]
    assert not constraint.text and constraint.output_schema["properties"].keys() == {"day"}
    assert result.final_output == Answer(day="Tuesday")


async def test_the_agent_that_takes_over_after_a_handoff_sees_the_question_not_the_transfer():
    backend = FakeBackend([['{"name": "transfer_to_billing", "arguments": {}}'], ["Billing", " here."]])
    model = LocalModel(backend, label="local/test")
    billing = Agent(name="Billing", instructions="Handle invoices.", model=model, tools=[get_current_time])
    triage = Agent(name="Triage", instructions="Route.", model=model, handoffs=[billing])

    result, _ = await run_and_collect(triage, "My invoice is wrong.")

    assert result.final_output == "Billing here."
    billing_prompt = backend.prompts[1]
    assert billing_prompt.endswith("<|im_start|>user\nMy invoice is wrong.<|im_end|>\n<|im_start|>assistant\n")
    assert "transfer_to_billing" not in billing_prompt and "<tool_response>" not in billing_prompt
    assert "<tools>" in billing_prompt  # its own tools are offered as on any first turn
    assert backend.calls[1]["constraint"].calls  # and may be called
