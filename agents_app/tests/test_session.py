"""DjangoSession keeps every rule of the SDK's own sessions, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import threading

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.memory import SessionSettings
from agents.testing import ScriptedModel, assistant_message, function_call
from asgiref.sync import sync_to_async
from django.db import connection

from agents_app.models import AgentSession, SessionItem
from agents_app.session import DjangoSession
from tests.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def user_item(text: str) -> dict:
    return {"role": "user", "content": text}


async def test_get_items_returns_latest_n_in_chronological_order():
    session = DjangoSession("s")
    await session.add_items([user_item(str(i)) for i in range(5)])

    assert [i["content"] for i in await session.get_items()] == ["0", "1", "2", "3", "4"]
    assert [i["content"] for i in await session.get_items(limit=2)] == ["3", "4"]
    assert [i["content"] for i in await session.get_items(limit=50)] == ["0", "1", "2", "3", "4"]
    assert await session.get_items(limit=0) == []


async def test_get_items_without_limit_uses_session_settings_limit():
    session = DjangoSession("s", session_settings=SessionSettings(limit=3))
    await session.add_items([user_item(str(i)) for i in range(5)])

    assert [i["content"] for i in await session.get_items()] == ["2", "3", "4"]
    assert [i["content"] for i in await session.get_items(limit=1)] == ["4"]


async def test_add_items_keeps_order_and_duplicates_and_returns_exactly_what_was_given():
    session = DjangoSession("s")
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "__fake_id__"}
    batch = [user_item("same"), user_item("same"), call, {**call, "call_id": "c2"}]

    await session.add_items(batch)

    stored = await session.get_items()
    assert stored == batch
    assert [set(item) for item in stored] == [set(item) for item in batch]  # no added keys (no DB id)


async def test_add_items_with_empty_list_is_a_no_op():
    session = DjangoSession("s")
    await session.add_items([])

    assert await session.get_items() == []
    assert not await AgentSession.objects.filter(session_id="s").aexists()


async def test_pop_item_removes_and_returns_the_newest_then_none_when_empty():
    session = DjangoSession("s")
    await session.add_items([user_item("first"), user_item("second")])

    assert await session.pop_item() == user_item("second")
    assert await session.pop_item() == user_item("first")
    assert await session.pop_item() is None
    assert await DjangoSession("never-used").pop_item() is None


async def test_clear_session_touches_only_its_own_session():
    mine, theirs = DjangoSession("mine"), DjangoSession("theirs")
    await mine.add_items([user_item("a")])
    await theirs.add_items([user_item("b")])

    await mine.clear_session()

    assert await mine.get_items() == []
    assert await theirs.get_items() == [user_item("b")]


async def test_two_instances_with_the_same_id_share_one_history():
    writer, reader = DjangoSession("shared"), DjangoSession("shared")
    await writer.add_items([user_item("hello")])

    assert await reader.get_items() == [user_item("hello")]
    assert await reader.pop_item() == user_item("hello")
    assert await writer.get_items() == []


async def test_awkward_content_round_trips_unchanged():
    session = DjangoSession("s")
    items = [
        user_item("ünïcödé ✓ 日本語 🙂 \u0000 nul and \ud83d lone surrogate"),
        user_item("quotes ' \" ` and backslash \\ and newline \n"),
        user_item("'); DROP TABLE agents_app_sessionitem; --"),
        {"role": "assistant", "content": [{"type": "output_text", "text": "x", "annotations": [{"a": [1, 2.5, None, True]}]}]},
    ]
    await session.add_items(items)

    assert await session.get_items() == items


def _in_threads(count: int, target) -> list:
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


async def test_concurrent_batches_never_interleave():
    batches, size = 6, 25

    def add(index: int) -> None:
        # Separate threads = separate database connections, like separate processes.
        asyncio.run(DjangoSession("busy").add_items([user_item(f"{index}:{n}") for n in range(size)]))

    await sync_to_async(_in_threads, thread_sensitive=False)(batches, add)

    contents = [item["content"] for item in await DjangoSession("busy").get_items()]
    assert len(contents) == batches * size
    for start in range(0, len(contents), size):
        chunk = contents[start : start + size]
        owner = chunk[0].split(":")[0]
        assert chunk == [f"{owner}:{n}" for n in range(size)]


async def test_concurrent_pops_never_return_the_same_item():
    await DjangoSession("pop").add_items([user_item(str(i)) for i in range(8)])

    def pop(index: int):
        return asyncio.run(DjangoSession("pop").pop_item())

    popped = await sync_to_async(_in_threads, thread_sensitive=False)(8, pop)

    assert sorted(item["content"] for item in popped) == [str(i) for i in range(8)]
    assert await DjangoSession("pop").get_items() == []


async def test_cancelled_writer_leaves_the_batch_fully_written(monkeypatch):
    session = DjangoSession("cancel")
    batch = [user_item(f"item {i}") for i in range(3000)]
    writing = threading.Event()
    write = DjangoSession._add_payloads

    def announced_write(self, payloads):
        writing.set()
        return write(self, payloads)

    monkeypatch.setattr(DjangoSession, "_add_payloads", announced_write)
    task = asyncio.create_task(session.add_items(batch))
    await eventually(writing.is_set, what="the write to be under way in its worker thread")
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    count = await SessionItem.objects.filter(session__session_id="cancel").acount()
    assert count in (0, len(batch))  # never half a batch
    assert count == len(batch)  # it had started, so it finished before the cancellation


@function_tool
def lucky_number() -> str:
    """Return the lucky number."""
    return "7"


async def test_history_is_remembered_across_real_runs_and_streamed_runs():
    session = DjangoSession("runner")
    model = ScriptedModel(
        [
            [function_call("lucky_number", {}, call_id="call_1")],
            [assistant_message("Your lucky number is 7.")],
            [assistant_message("I said 7.")],
        ]
    )
    agent = Agent(name="Helper", instructions="Be brief.", tools=[lucky_number], model=model)
    config = RunConfig(tracing_disabled=True)

    first = await Runner.run(agent, "What is my lucky number?", session=session, run_config=config)
    assert first.final_output == "Your lucky number is 7."

    streamed = Runner.run_streamed(agent, "What did you say?", session=session, run_config=config)
    deltas = [e.data.delta async for e in streamed.stream_events() if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]
    assert "".join(deltas) == "I said 7."

    # The second run's model input carried the whole first run from the database.
    second_input = model.last_call.input
    kinds = [item.get("type") or item.get("role") for item in second_input]
    assert kinds == ["user", "function_call", "function_call_output", "message", "user"]
    assert [i.get("content") for i in second_input if i.get("role") == "user"] == ["What is my lucky number?", "What did you say?"]
    assert len(await session.get_items()) == 6
