"""The chat socket, driven with channels' WebsocketCommunicator on the real channel layer
(in-memory or Redis, whichever the suite runs on) and the real database."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from agents import ModelSettings
from agents.testing import function_call
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from agents_app import history, providers
from agents_app.model_guards import unguarded
from chat.models import Conversation, Message, Run
from chat.routing import websocket_urlpatterns
from chat.tests.helpers import connect, of_type, receive_until, send_message, stored_history
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


async def test_reply_streams_deltas_in_order_and_is_stored_with_usage(user, conversation, script):
    with script([streamed("Hel", "lo ", "there, ", "friend.")]):
        ws = await connect(user)
        await send_message(ws, conversation, "Hi!")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message.created", "run.started"]
    assert kinds[-3:] == ["message.completed", "usage", "run.finished"]
    assert [e["delta"] for e in of_type(events, "message.delta")] == ["Hel", "lo ", "there, ", "friend."]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert {e["run"] for e in events} == {events[0]["run"]}
    assert of_type(events, "message.created")[0]["request_id"] == "r1"

    completed = of_type(events, "message.completed")[0]
    assert completed["content"] == "Hello there, friend."
    assert completed["html"] == "<p>Hello there, friend.</p>\n"
    assert of_type(events, "run.finished")[0] == {**of_type(events, "run.finished")[0], "status": "completed", "error": ""}

    reply = await Message.objects.aget(public_id=completed["message"])
    assert reply.status == Message.Status.COMPLETED
    assert reply.content == "Hello there, friend."
    assert (reply.requests, reply.input_tokens, reply.output_tokens, reply.total_tokens) == (1, 42, 7, 49)
    assert reply.cost is not None and reply.cost > 0
    assert reply.model == "gpt-4.1-mini"
    assert reply.duration_ms is not None and reply.time_to_first_token_ms is not None
    usage = of_type(events, "usage")[0]
    assert usage["total_tokens"] == 49 and usage["cost"] == str(reply.cost)
    run = await Run.objects.aget(public_id=events[0]["run"])
    assert run.status == Run.Status.COMPLETED and run.finished_at is not None


async def test_tool_call_and_result_stream_live_correlated_by_call_id(user, conversation, script):
    steps = [
        [function_call("get_current_time", {}, call_id="call_time_1")],
        streamed("It is ", "noon."),
    ]
    with script(steps):
        ws = await connect(user)
        await send_message(ws, conversation, "What time is it?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    kinds = [e["type"] for e in events]
    assert kinds.index("tool.called") < kinds.index("tool.output") < kinds.index("message.delta")
    called = of_type(events, "tool.called")[0]
    output = of_type(events, "tool.output")[0]
    assert called == {**called, "call_id": "call_time_1", "name": "get_current_time", "arguments": {}, "agent": "Assistant"}
    assert output["call_id"] == "call_time_1" and output["failed"] is False
    assert "(" in output["output"]  # "HH:MM (zone)" from the real tool

    reply = await Message.objects.aget(public_id=of_type(events, "message.completed")[0]["message"])
    assert reply.activity == [
        {
            "kind": "tool",
            "call_id": "call_time_1",
            "name": "get_current_time",
            "arguments": {},
            "agent": "Assistant",
            "status": "completed",
            "output": output["output"],
        }
    ]
    assert (reply.requests, reply.total_tokens) == (2, 98)
    assert history.problems(await stored_history(conversation)) == []


async def test_follow_up_question_sees_the_earlier_turns(user, conversation, script):
    with script([streamed("Paris."), streamed("France.")]) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "Capital of France?")
        await receive_until(ws, "run.finished")
        await send_message(ws, conversation, "And which country was that?", request_id="r2")
        await receive_until(ws, "run.finished")
        await ws.disconnect()

    sent = model.last_call.input
    assert [(i.get("role"), i.get("content") if isinstance(i.get("content"), str) else "…") for i in sent] == [
        ("user", "Capital of France?"),
        ("assistant", "…"),
        ("user", "And which country was that?"),
    ]


async def test_two_sockets_on_one_conversation_receive_the_same_stream(user, conversation, script):
    with script([streamed("One ", "two ", "three.")]):
        first, second = await connect(user), await connect(user)
        await second.send_json_to({"type": "conversation.open", "conversation": str(conversation.public_id)})
        state = await second.receive_json_from()
        assert state["type"] == "conversation.state" and state["run"] is None
        await send_message(first, conversation)
        seen_first = await receive_until(first, "run.finished")
        seen_second = await receive_until(second, "run.finished")
        await first.disconnect()
        await second.disconnect()

    assert seen_first == seen_second
    assert "".join(e["delta"] for e in of_type(seen_second, "message.delta")) == "One two three."


async def test_second_message_while_a_run_is_active_gets_busy_from_any_socket(user, conversation, script):
    gate = asyncio.Event()
    with script([streamed("Still ", "thinking", gate=gate)]):
        first, second = await connect(user), await connect(user)
        await send_message(first, conversation, "First")
        await receive_until(first, "message.delta")

        await send_message(second, conversation, "Second", request_id="r-second")
        # (The second tab first hears that a run started: it did not follow this conversation yet.)
        busy = (await receive_until(second, "error", timeout=5))[-1]
        await send_message(first, conversation, "Third", request_id="r-third")
        busy_again = await receive_until(first, "error")

        gate.set()
        await receive_until(first, "run.finished")
        await first.disconnect()
        await second.disconnect()

    assert busy == {**busy, "type": "error", "code": "busy", "request_id": "r-second"}
    assert busy_again[-1]["code"] == "busy" and busy_again[-1]["request_id"] == "r-third"
    contents = [m async for m in Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True)]
    assert contents == ["First"]  # the refused messages were not stored


async def test_stop_mid_reply_keeps_partial_text_and_a_valid_history(user, conversation, script):
    never = asyncio.Event()
    with script([streamed("Once upon ", "a time", gate=never), streamed("Sure.")]) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "Tell me a story")
        await receive_until(ws, "message.delta")
        await ws.send_json_to({"type": "run.cancel", "conversation": str(conversation.public_id)})
        events = await receive_until(ws, "run.finished")

        assert of_type(events, "run.finished")[0]["status"] == "cancelled"
        completed = of_type(events, "message.completed")[0]
        assert completed["status"] == "cancelled" and completed["content"] == "Once upon "
        items = await stored_history(conversation)
        assert history.problems(items) == []
        assert items[-1]["role"] == "assistant" and items[-1]["content"].startswith("Once upon")

        # The user can keep chatting, and the model gets a valid history.
        await send_message(ws, conversation, "Go on", request_id="r2")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert of_type(events, "run.finished")[0]["status"] == "completed"
    assert history.problems(model.last_call.input) == []
    reply = await Message.objects.filter(conversation=conversation, role="assistant").afirst()
    assert reply.status == Message.Status.CANCELLED and reply.content == "Once upon "


async def test_stop_while_a_tool_runs_closes_the_call_in_history(user, conversation, script):
    """The SDK stores a turn's function call with its output, after the tool; a call stored
    before its tool finished (an approval pause, a session written ahead of the tool) must
    still be closed when the run is stopped. The tool stores its own call first, so the
    history really holds an open call when Stop comes."""
    never = asyncio.Event()

    from agents import function_tool

    from agents_app.session import DjangoSession

    @function_tool
    async def slow_lookup() -> str:
        """Look something up slowly."""
        await DjangoSession(conversation.session_id).add_items(
            [{"type": "function_call", "call_id": "call_slow", "name": "slow_lookup", "arguments": "{}"}]
        )
        await never.wait()
        return "never"

    from agents_app.registry import get_spec

    agent = get_spec("assistant").agent
    original_tools = agent.tools
    agent.tools = [*original_tools, slow_lookup]
    try:
        with script([[function_call("slow_lookup", {}, call_id="call_slow")], streamed("Done.")]):
            ws = await connect(user)
            await send_message(ws, conversation, "Look it up")
            await receive_until(ws, "tool.called")
            await ws.send_json_to({"type": "run.cancel", "conversation": str(conversation.public_id)})
            events = await receive_until(ws, "run.finished")
            await ws.disconnect()
    finally:
        agent.tools = original_tools

    assert of_type(events, "run.finished")[0]["status"] == "cancelled"
    assert of_type(events, "message.completed")[0]["activity"][0]["status"] == "cancelled"
    stored = await stored_history(conversation)
    assert history.problems(stored) == []
    outputs = [item for item in stored if item.get("type") == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [("call_slow", history.CANCELLED_TOOL_OUTPUT)]


async def test_closing_the_socket_mid_stream_still_stores_the_reply(user, conversation, script):
    gate = asyncio.Event()
    with script([streamed("Kept ", "after ", "you left.", gate=gate)]):
        ws = await connect(user)
        await send_message(ws, conversation, "Hello")
        run_id = (await receive_until(ws, "message.delta"))[0]["run"]
        await ws.disconnect()
        gate.set()
        from chat.engine.runs import wait_for_run

        await wait_for_run(run_id)

    reply = await Message.objects.aget(run__public_id=run_id, role="assistant")
    assert reply.status == Message.Status.COMPLETED and reply.content == "Kept after you left."


async def test_reconnecting_socket_replays_what_it_missed_without_duplicates(user, conversation, script):
    gate = asyncio.Event()
    with script([streamed("A", "B", "C", "D", gate=gate, after=2)]):
        ws = await connect(user)
        await send_message(ws, conversation, "Hello")
        seen = await receive_until(ws, "message.delta")
        await ws.disconnect()

        again = await connect(user)
        await again.send_json_to(
            {"type": "conversation.open", "conversation": str(conversation.public_id), "run": seen[-1]["run"], "seq": seen[-1]["seq"]}
        )
        state = await again.receive_json_from()
        gate.set()
        rest = await receive_until(again, "run.finished")
        await again.disconnect()

    assert state["run"]["id"] == seen[-1]["run"]
    everything = seen + rest
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert "".join(e["delta"] for e in of_type(everything, "message.delta")) == "ABCD"


async def test_reopening_with_a_run_the_conversation_does_not_have_replays_the_active_run_from_its_start(
    user, conversation, script
):
    """A tab that names a stale run id (another conversation's, or one long gone) still sees the
    reply being written now in full, as a tab naming no run does, instead of only its tail."""
    gate = asyncio.Event()
    with script([streamed("A", "B", "C", gate=gate, after=2)]):
        ws = await connect(user)
        await send_message(ws, conversation, "Hello")
        seen = await receive_until(ws, "message.delta")
        await ws.disconnect()

        again = await connect(user)
        await again.send_json_to(
            {"type": "conversation.open", "conversation": str(conversation.public_id), "run": str(uuid.uuid4()), "seq": 5}
        )
        state = await again.receive_json_from()
        gate.set()
        replayed = await receive_until(again, "run.finished")
        await again.disconnect()

    assert state["run"]["id"] == seen[-1]["run"]
    assert [e["seq"] for e in replayed] == list(range(1, len(replayed) + 1))
    assert "".join(e["delta"] for e in of_type(replayed, "message.delta")) == "ABC"


async def test_model_error_ends_as_failed_message_with_a_clear_error(user, conversation, script, settings):
    settings.AGENTS_MODEL_MAX_RETRIES = 0
    providers.reset()
    with script([RuntimeError("boom: internal details")]):
        ws = await connect(user)
        await send_message(ws, conversation)
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    finished = of_type(events, "run.finished")[0]
    assert finished["status"] == "failed"
    assert "internal details" not in finished["error"] and "try again" in finished["error"].lower()
    reply = await Message.objects.aget(public_id=of_type(events, "message.completed")[0]["message"])
    assert reply.status == Message.Status.FAILED and reply.error == finished["error"]
    assert history.problems(await stored_history(conversation)) == []


async def test_tool_crash_is_reported_to_the_model_and_shown_as_failed_output(user, conversation, script):
    from agents import function_tool

    from agents_app.registry import get_spec

    @function_tool
    def broken() -> str:
        """Always fails."""
        raise ValueError("secret stack detail")

    agent = get_spec("assistant").agent
    original_tools = agent.tools
    agent.tools = [*original_tools, broken]
    try:
        with script([[function_call("broken", {}, call_id="call_broken")], streamed("Sorry, that failed.")]):
            ws = await connect(user)
            await send_message(ws, conversation, "Break it")
            events = await receive_until(ws, "run.finished")
            await ws.disconnect()
    finally:
        agent.tools = original_tools

    output = of_type(events, "tool.output")[0]
    assert output["call_id"] == "call_broken"
    assert "secret stack detail" not in output["output"]
    assert of_type(events, "run.finished")[0]["status"] == "completed"
    assert history.problems(await stored_history(conversation)) == []


async def test_max_turns_ends_as_failed_with_a_clear_message(user, conversation, script):
    loop = [[function_call("get_current_time", {}, call_id=f"call_{n}")] for n in range(10)]
    with script(loop):
        ws = await connect(user)
        await send_message(ws, conversation, "Loop forever")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    finished = of_type(events, "run.finished")[0]
    assert finished["status"] == "failed" and "more steps" in finished["error"]
    assert history.problems(await stored_history(conversation)) == []


async def test_conversation_create_answers_with_the_new_conversation(user):
    ws = await connect(user)
    await ws.send_json_to({"type": "conversation.create", "agent": "assistant", "request_id": "c1"})
    created = await ws.receive_json_from()
    await ws.send_json_to({"type": "conversation.create", "agent": "nope", "request_id": "c2"})
    refused = await ws.receive_json_from()
    await ws.disconnect()

    assert created["type"] == "conversation.created" and created["request_id"] == "c1"
    assert await Conversation.objects.filter(owner=user, public_id=created["conversation"]).aexists()
    assert refused["code"] == "unknown_agent" and "assistant" in refused["message"]


async def test_anonymous_socket_is_closed_with_4401():
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/")
    communicator.scope["user"] = AnonymousUser()
    connected, _ = await communicator.connect()
    assert connected
    closed = await communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4401, "reason": "Sign in required."}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "bad_json"),
        ("[1, 2, 3]", "bad_frame"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"content": "no type"}', "unknown_type"),
        ('{"type": "message.send", "content": "hi"}', "missing_field"),
        ('{"type": "message.send", "conversation": 12, "content": "hi"}', "invalid_field"),
        ('{"type": "message.send", "conversation": "not-a-uuid", "content": "hi"}', "invalid_field"),
        ('{"type": "message.send", "conversation": "CONV", "content": "   "}', "empty_content"),
        ('{"type": "message.send", "conversation": "CONV", "content": "LONG"}', "too_long"),
        ('{"type": "message.send", "conversation": "CONV"}', "missing_field"),
        ('{"type": "message.send", "conversation": "OTHER", "content": "hi"}', "not_found"),
        ('{"type": "conversation.open", "conversation": "OTHER"}', "not_found"),
        ('{"type": "run.cancel", "conversation": "OTHER"}', "not_found"),
        ('{"type": "run.cancel", "conversation": "CONV"}', "not_running"),
        ('{"type": "conversation.open", "conversation": "CONV", "seq": -1}', "invalid_field"),
        ("HUGE", "too_large"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(user, other_user, conversation, frame, code, settings):
    theirs = await Conversation.objects.acreate(owner=other_user, agent_key="assistant")
    frame = (
        frame.replace("CONV", str(conversation.public_id))
        .replace("OTHER", str(theirs.public_id))
        .replace("LONG", "x" * (settings.CHAT_MAX_MESSAGE_CHARS + 1))
        .replace("HUGE", json.dumps({"type": "ping", "pad": "x" * settings.CHAT_MAX_FRAME_BYTES}))
    )
    ws = await connect(user)
    await ws.send_to(text_data=frame)
    error = await ws.receive_json_from()
    await ws.send_json_to({"type": "ping", "request_id": "still-there"})
    pong = await ws.receive_json_from()
    await ws.disconnect()

    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert pong == {"type": "pong", "request_id": "still-there"}
    assert not await Message.objects.filter(conversation=theirs).aexists()


async def test_binary_frames_are_refused(user):
    ws = await connect(user)
    await ws.send_to(bytes_data=b"\x00\x01")
    error = await ws.receive_json_from()
    await ws.disconnect()
    assert error["code"] == "bad_frame"


async def test_without_a_configured_model_sending_explains_how_to_configure_one(user, conversation, settings, monkeypatch):
    settings.AGENTS_MODEL_PROVIDER = ""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    from agents_app import local

    monkeypatch.setattr(local, "is_installed", lambda: False)
    ws = await connect(user)
    await send_message(ws, conversation)
    error = await ws.receive_json_from()
    await ws.disconnect()

    assert error["code"] == "provider_not_configured" and "OPENAI_API_KEY" in error["message"]
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_chat_completions_usage_is_requested_on_streams(settings):
    settings.AGENTS_MODEL_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test"
    settings.AGENTS_OPENAI_API = "chat_completions"
    providers.reset()
    try:
        resolved = providers.model_for_run()
    finally:
        providers.reset()
    assert resolved.settings.include_usage is True
    assert type(unguarded(resolved.model)).__name__ == "OpenAIChatCompletionsModel"


async def test_responses_api_is_the_default_for_openai(settings):
    settings.AGENTS_MODEL_PROVIDER = ""
    settings.OPENAI_API_KEY = "sk-test"
    settings.AGENTS_MODEL = "gpt-4.1-mini"
    providers.reset()
    try:
        resolved = providers.model_for_run()
    finally:
        providers.reset()
    assert type(unguarded(resolved.model)).__name__ == "OpenAIResponsesModel"
    assert resolved.label == "gpt-4.1-mini"
    assert isinstance(resolved.settings, ModelSettings) and resolved.settings.retry is not None



async def test_events_the_layer_dropped_are_refilled_from_the_buffer_in_order(user, conversation):
    from chat.engine.process import engine
    from chat.engine.streams import RunStream

    ws = await connect(user)
    await ws.send_json_to({"type": "conversation.open", "conversation": str(conversation.public_id)})
    await ws.receive_json_from()  # conversation.state
    run_id = f"run-{uuid.uuid4()}"  # Redis keeps buffers between test runs
    stream = RunStream(conversation_id=str(conversation.public_id), run_id=run_id, group=conversation.group_name, buffer=engine.buffer)
    await stream.publish({"type": "message.delta", "delta": "one "})
    await stream.flush()
    # The next two never reach this socket's channel (as when the layer's channel is full)...
    for delta in ("two ", "three "):
        stream.seq += 1
        await engine.buffer.append(
            run_id, [{"type": "message.delta", "delta": delta, "conversation": stream.conversation_id, "run": run_id, "seq": stream.seq}]
        )
    # ...and the following one does.
    await stream.publish({"type": "message.delta", "delta": "four"})
    await stream.flush()
    received = [await ws.receive_json_from() for _ in range(4)]
    await ws.disconnect()

    assert [e["seq"] for e in received] == [1, 2, 3, 4]
    assert "".join(e["delta"] for e in received) == "one two three four"


async def test_replay_buffer_serves_a_run_resumed_after_its_buffer_expired():
    from chat.engine.process import engine

    buffer = engine.buffer
    run_id = f"run-{uuid.uuid4()}"
    # Paused at seq 5 and the buffer expired; the resumed run continues at seq 6.
    for seq in (6, 7, 8):
        await buffer.append(run_id, [{"type": "message.delta", "delta": str(seq), "run": run_id, "seq": seq}])

    assert [e["seq"] for e in await buffer.read(run_id, after=0)] == [6, 7, 8]
    assert [e["seq"] for e in await buffer.read(run_id, after=6)] == [7, 8]
    assert await buffer.read(run_id, after=8) == []
    await buffer.finish(run_id)
    await buffer.append(run_id, [{"type": "message.delta", "delta": "9", "run": run_id, "seq": 9}])
    assert [e["seq"] for e in await buffer.read(run_id, after=7)] == [8, 9]  # appending revives it


@pytest.mark.parametrize("noticed_by", ["its-silence", "the-sweepers-notice"])
async def test_a_socket_following_a_run_whose_process_died_hears_it_ended_as_interrupted(user, conversation, settings, noticed_by):
    """The run's process died mid-reply: it publishes nothing more. A tab watching it does not
    show "generating" until reload: after RUN_KEEPALIVE_SECONDS of silence it finds the run
    dead, or the sweeper's notice (another process ended the run) tells it at once; either way
    it hears the end as stored, numbered after what it had."""
    from datetime import timedelta

    from asgiref.sync import sync_to_async
    from django.utils import timezone

    from chat.engine import transitions
    from chat.tests.factories import ReplyFactory, RunFactory

    settings.RUN_KEEPALIVE_SECONDS = 0.1 if noticed_by == "its-silence" else 60
    settings.AUTH_RECHECK_SECONDS = 60
    run = await sync_to_async(RunFactory)(
        conversation=conversation, status=Run.Status.RUNNING, finished_at=None, heartbeat_at=timezone.now(), last_seq=4
    )
    await sync_to_async(ReplyFactory)(conversation=conversation, run=run, status=Message.Status.STREAMING, content="Half a")
    ws = await connect(user)
    await ws.send_json_to({"type": "conversation.open", "conversation": str(conversation.public_id)})
    state = await ws.receive_json_from()
    assert state["type"] == "conversation.state" and state["run"]["status"] == "running"
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(hours=1))  # the process dies
    if noticed_by == "the-sweepers-notice":
        await sync_to_async(transitions.release_dead_runs)(conversation=conversation)
    ending = await receive_until(ws, "run.finished", timeout=5)
    await ws.disconnect()

    assert [e["type"] for e in ending] == ["message.completed", "usage", "run.finished"]
    assert ending[-1]["status"] == "interrupted" and ending[0]["status"] == "failed" and ending[0]["content"] == "Half a"
    assert [e["seq"] for e in ending] == [1, 2, 3]
    assert (await Run.objects.aget(pk=run.pk)).status == Run.Status.INTERRUPTED
