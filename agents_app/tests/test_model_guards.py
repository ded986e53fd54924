"""Never an empty "completed" reply: a model turn with no text, no call and no structured output
is asked for once more; a second empty turn ends the run as failed, with a clear message and a
history that is valid input for the next run. Driven through the socket and the run service."""

from __future__ import annotations

import pytest
from agents.testing import function_call

from agents_app import history
from agents_app.catalog.tutor import HomeworkCheck
from agents_app.model_guards import EMPTY_REPLY_MESSAGE, is_empty_output
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    structured,
    turn,
)
from chat.models import Message
from chat.tests.helpers import of_type, stored_history
from chat.tests.scripts import USAGE, streamed

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_empty_turn_is_asked_for_again_and_the_second_answer_is_the_reply(user, script):
    conversation = await new_conversation(user, "assistant")
    with script([[], streamed("Hello ", "there!")]) as model:
        events = await turn(user, conversation, "Hi")

    assert len(model.calls) == 2
    assert one(events, "run.finished")["status"] == "completed"
    assert [e["delta"] for e in of_type(events, "message.delta")] == ["Hello ", "there!"]
    reply = await reply_of(events)
    assert reply.content == "Hello there!" and reply.status == Message.Status.COMPLETED
    assert reply.requests == 1 and reply.total_tokens == 2 * USAGE.total_tokens  # one request, both turns' tokens


async def test_two_empty_turns_end_the_run_as_failed_and_close_the_history(user, script):
    conversation = await new_conversation(user, "assistant")
    with script([[], [], streamed("Hi again.")]) as model:
        events = await turn(user, conversation, "Hi")
        second = await turn(user, conversation, "Are you there?", request_id="r2")

    finished = one(events, "run.finished")
    assert finished["status"] == "failed" and finished["error"] == EMPTY_REPLY_MESSAGE
    reply = await reply_of(events)
    assert reply.status == Message.Status.FAILED and reply.error == EMPTY_REPLY_MESSAGE
    # The failed turn is closed like any failure: the next request is valid and answered.
    assert history.problems(await stored_history(conversation)) == []
    assert one(second, "run.finished")["status"] == "completed"
    assert [item.get("role") for item in model.last_call.input] == ["user", "assistant", "user"]


async def test_a_streamed_turn_of_whitespace_is_empty_and_never_reaches_the_user(user, script):
    conversation = await new_conversation(user, "assistant")
    with script([streamed("  ", "\n\n"), streamed("Here ", "you go.")]):
        events = await turn(user, conversation, "Hi")

    assert [e["delta"] for e in of_type(events, "message.delta")] == ["Here ", "you go."]
    assert (await reply_of(events)).content == "Here you go."


async def test_a_turn_with_a_tool_call_and_no_text_is_not_empty(user, script):
    conversation = await new_conversation(user, "assistant")
    with script([[function_call("get_current_time", {}, call_id="c1")], streamed("It is noon.")]) as model:
        events = await turn(user, conversation, "Time?")

    assert len(model.calls) == 2 and one(events, "run.finished")["status"] == "completed"


async def test_an_empty_turn_of_a_nested_run_is_retried_too(user, script):
    # The homework check runs without streaming (Runner.run inside the guardrail).
    conversation = await new_conversation(user, "tutor")
    check = structured(HomeworkCheck(is_homework=True, reasoning="Algebra.", subject="math"))
    steps = [[], check, [function_call("transfer_to_math_tutor", {}, call_id="h1")], streamed("x = 4.")]
    with script(steps):
        events = await turn(user, conversation, "Solve x + 3 = 7")

    reply = await reply_of(events)
    assert reply.status == Message.Status.COMPLETED and reply.agent_name == "Math Tutor"


def test_what_counts_as_an_empty_turn():
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": " \n"}]}
    assert is_empty_output([]) and is_empty_output([message]) and is_empty_output([{"type": "reasoning"}])
    assert not is_empty_output([{**message, "content": [{"type": "output_text", "text": "Hi"}]}])
    assert not is_empty_output([{**message, "content": [{"type": "refusal", "refusal": "No."}]}])
    assert not is_empty_output([{"type": "function_call", "name": "x", "arguments": "{}", "call_id": "c"}])
