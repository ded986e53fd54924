"""Hypothesis fuzzes the chat socket through WebsocketCommunicator, one socket for every frame:
arbitrary JSON (any type, nesting, size, unicode, lone surrogates, NaN), protocol frames with
arbitrary field values (and the user's own conversation, someone else's, real agent keys),
text that is not JSON, deep nesting, frames over the size limit and binary frames.

After every frame a `ping` must come back as its `pong`: the socket never closes, never
answers `internal_error`, and a frame that is not a handled object gets an `error` before
that pong. Runs the frames start must all finish, and someone else's conversation is never
touched.

Bounded: FUZZ_SOCKET_EXAMPLES (default 500) frames, seeded (`derandomize`), a 5 s
deadline per frame; 7 to 15 s on two cores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.consumers import ChatConsumer
from chat.models import Conversation, Message, Run
from chat.tests.factories import UserFactory, finished_reply
from chat.tests.helpers import connect

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("FUZZ_SOCKET_EXAMPLES", "500"))
OWN, OTHERS, REPLY = "@OWN@", "@OTHERS@", "@REPLY@"  # replaced by real ids in the frame's text

# Any character, lone surrogates included (json.dumps escapes them as "\ud800").
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4), max_leaves=20
)
ids = st.sampled_from([OWN, OTHERS, REPLY, "00000000-0000-0000-0000-000000000000", "not-an-id"]) | st.uuids().map(str)
field_values = {
    "conversation": ids | json_values,
    "content": st.sampled_from(["Hello", "What time is it?", "   "]) | st.integers(8001, 9000).map("x".__mul__) | any_text | json_values,
    "agent": st.sampled_from(["assistant", "support", "diagnostics", "nope"]) | any_text | json_values,
    "seq": st.integers(min_value=-5, max_value=2**70) | json_values,
    "run": ids | json_values,
    "message": ids | json_values,
    "call_id": st.sampled_from(["call_1"]) | st.integers(129, 300).map("c".__mul__) | any_text | json_values,
    "approve": st.booleans() | json_values,
    "reason": any_text | json_values,
    "title": st.sampled_from(["Trip to Oslo", "   ", "x" * 201]) | any_text | json_values,
    "rating": st.sampled_from(["up", "down", "none", ""]) | any_text | json_values,
    "comment": st.sampled_from(["", "x" * 2001]) | any_text | json_values,
    "request_id": st.integers() | any_text | json_values,
}
protocol_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(ChatConsumer.handlers)) | json_values},
    optional=field_values,
)
# Frames that are nearly right: the right fields with plausible values, one of them possibly
# replaced by anything, so the fuzzer also gets past validation and starts real runs.
plausible = {
    "conversation": st.just(OWN),
    "content": st.sampled_from(["Hello", "What time is it?", "Tell me a story"]),
    "agent": st.sampled_from(["assistant", "support", "diagnostics"]),
    "seq": st.integers(0, 5),
    "run": ids,
    "message": ids,
    "call_id": st.just("call_1"),
    "approve": st.booleans(),
    "reason": st.just("because"),
    "title": st.sampled_from(["Trip to Oslo", "Plans"]),
    "rating": st.sampled_from(["up", "down", "none"]),
    "comment": st.just("Good"),
    "request_id": st.text("abc123", max_size=8),
}
nearly_right = st.builds(
    lambda kind, fields, broken, value: json.dumps({"type": kind, **fields, **({broken: value} if broken else {})}),
    st.sampled_from(sorted(ChatConsumer.handlers)),
    st.fixed_dictionaries(plausible),
    st.sampled_from([None] * len(plausible) + list(plausible)),  # half of them entirely right
    json_values,
)
anything_else = st.one_of(
    protocol_frames.map(json.dumps),
    protocol_frames.map(lambda frame: json.dumps(frame, ensure_ascii=False)).filter(lambda text: _utf8(text)),
    json_values.map(json.dumps),
    st.text(max_size=200),  # mostly not JSON
    st.integers(1, 40_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 30_000).map(lambda depth: '{"type": "ping", "x": ' + '{"a": ' * depth + "1" + "}" * depth + "}"),
    st.integers(60_000, 70_000).map(lambda size: json.dumps({"type": "ping", "pad": "x" * size})),
    st.binary(max_size=100),
)
# Half and half (`|` would flatten both into one uniform choice among all the kinds above).
frames = st.booleans().flatmap(lambda right: nearly_right if right else anything_else)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class LoopThread:
    """An event loop of its own in a thread: Hypothesis drives examples synchronously while one
    socket stays open across all of them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Socket:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.sent = 0
        self.events: list[dict] = []

    async def exchange(self, frame: str | bytes) -> list[dict]:
        """Send `frame`, then a ping; everything the socket sends until that ping's pong."""
        self.sent += 1
        marker = f"fuzz-{self.sent}"
        # send_input, not send_to: an empty frame is a frame too.
        await self.ws.send_input({"type": "websocket.receive", "bytes" if isinstance(frame, bytes) else "text": frame})
        await self.ws.send_json_to({"type": "ping", "request_id": marker})
        replies = []
        while True:
            output = await self.ws.receive_output(timeout=5)
            assert output["type"] == "websocket.send", f"the socket closed after {frame[:300]!r}: {output}"
            event = json.loads(output["text"])
            self.events.append(event)
            if event == {"type": "pong", "request_id": marker}:
                return replies
            replies.append(event)

    async def drain(self, *, quiet: float = 1.0) -> None:
        while True:
            try:
                output = await self.ws.receive_output(timeout=quiet)
            except TimeoutError:
                return
            assert output["type"] == "websocket.send", output
            self.events.append(json.loads(output["text"]))


def _handled(frame: str | bytes) -> bool:
    """Whether the consumer has a handler for this frame (else it must answer `error`)."""
    if isinstance(frame, bytes):
        return False
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"] in ChatConsumer.handlers


def test_every_frame_gets_an_answer_and_the_socket_never_closes(user, settings):
    # Limits off: the fuzzer sends far more frames than a person, and must reach the handlers.
    settings.RATE_LIMIT_SOCKET_FRAMES = settings.RATE_LIMIT_CONVERSATIONS = ""
    own = Conversation.objects.create(owner=user, agent_key="assistant", current_agent_name="Assistant")
    theirs = Conversation.objects.create(owner=UserFactory(), agent_key="assistant", current_agent_name="Assistant", title="Theirs")
    reply = finished_reply(conversation=own)
    loop = LoopThread()
    socket = Socket(loop.run(connect(user)))
    started = time.monotonic()

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=timedelta(seconds=5),
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(frame=frames)
    @example(frame='{"type": ["ping"]}')
    @example(frame='{"type": {"a": 1}}')
    @example(frame="[" * 30_000 + "]" * 30_000)
    @example(frame='{"type": ' + "[" * 900 + "]" * 900 + "}")
    @example(frame='{"type": "message.send", "conversation": "@OWN@", "content": "hi \\ud800"}')
    @example(frame='{"type": "conversation.open", "conversation": "@OWN@", "seq": 100000000000000000000000}')
    def fuzz(frame):
        if isinstance(frame, str):
            frame = frame.replace(OWN, str(own.public_id)).replace(OTHERS, str(theirs.public_id)).replace(REPLY, str(reply.public_id))
        replies = loop.run(socket.exchange(frame))
        errors = [event for event in replies if event["type"] == "error"]
        assert not [e for e in errors if e["code"] == "internal_error"], (frame[:300], errors)
        assert all(0 < len(e["message"]) <= 300 for e in errors), errors
        if not _handled(frame):
            assert errors, f"no error for {frame[:300]!r}: {replies}"

    try:
        fuzz()
        # Every run a frame started ends, and its end reaches the socket.
        deadline = time.monotonic() + 60
        while Run.objects.filter(conversation__owner=user).active().exists():
            assert time.monotonic() < deadline, "runs started by the fuzzer did not finish"
            time.sleep(0.1)
        loop.run(socket.drain())
        elapsed = time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):  # the socket may be gone already: report the failure
            loop.run(socket.ws.disconnect(), timeout=5)
        loop.stop()

    started_runs = {e["run"] for e in socket.events if e["type"] == "run.started"}
    finished_runs = {e["run"] for e in socket.events if e["type"] == "run.finished"}
    assert started_runs <= finished_runs
    assert not Message.objects.filter(conversation=theirs).exists()
    assert Conversation.objects.get(pk=theirs.pk).title == "Theirs"
    codes = Counter(e["code"] for e in socket.events if e["type"] == "error")
    print(f"socket fuzz: {socket.sent} frames, {len(started_runs)} runs, {elapsed:.1f} s; errors: {dict(codes)}")
