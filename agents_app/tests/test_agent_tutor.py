"""The homework tutor through the chat: triage hands off, the tutor that answered keeps the
conversation, and the homework guardrail (a nested classifier run) blocks anything else, on
every turn, counting its tokens on the reply."""

from __future__ import annotations

import pytest
from agents.testing import function_call

from agents_app import history
from agents_app.catalog.tutor import (
    FIELDS,
    HomeworkCheck,
    history_tutor,
    math_tutor,
    triage_agent,
)
from agents_app.registry import get_spec
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    structured,
    turn,
)
from chat.models import Conversation, Message
from chat.tests.helpers import of_type, stored_history
from chat.tests.scripts import streamed

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)

HOMEWORK = structured(HomeworkCheck(is_homework=True, reasoning="An algebra exercise."))  # subject unclear
MATH = structured(HomeworkCheck(is_homework=True, reasoning="An algebra exercise.", subject="math"))
HISTORY = structured(HomeworkCheck(is_homework=True, reasoning="A history question.", subject="history"))
NOT_HOMEWORK = structured(HomeworkCheck(is_homework=False, reasoning="Asks for a cake recipe."))


@chat_db
async def test_math_question_goes_to_the_math_tutor_who_keeps_the_next_turn(user, script):
    conversation = await new_conversation(user, "tutor")
    steps = [
        MATH,
        [function_call("transfer_to_math_tutor", {}, call_id="call_handoff")],
        streamed("Subtract 3 ", "from both sides: x = 4."),
        MATH,
        streamed("Now divide ", "by 2."),
    ]
    with script(steps) as model:
        first = await turn(user, conversation, "Solve x + 3 = 7")
        second = await turn(user, conversation, "And 2x = 8?", request_id="r2")

    # Turn 1: the handoff is visible live and in the stored activity.
    assert one(first, "run.started")["agent"] == "Tutor Triage"
    assert one(first, "agent.updated")["agent"] == "Math Tutor"
    reply = await reply_of(first)
    assert reply.agent_name == "Math Tutor" and reply.content == "Subtract 3 from both sides: x = 4."
    assert {"kind": "handoff", "agent": "Math Tutor"} in reply.activity
    # Guardrail check + triage + tutor, all on the stored reply.
    assert (reply.requests, reply.total_tokens) == (3, 3 * 49)

    # Turn 2 starts with the Math Tutor, not the triage agent, and is checked again.
    assert one(second, "run.started")["agent"] == "Math Tutor"
    assert not of_type(second, "agent.updated")
    calls = model.calls
    check_input = calls[3].input[-1]["content"]
    assert calls[3].output_schema is not None and check_input.endswith("Latest user message:\nAnd 2x = 8?")
    assert "User: Solve x + 3 = 7" in check_input  # the earlier messages, for context
    # The triage agent had to hand off, and only to the tutor of the subject the check found.
    assert calls[1].model_settings.tool_choice == "required"
    assert [h.agent_name for h in calls[1].handoffs] == ["Math Tutor"]
    # A math question for the Math Tutor: its own instructions, nothing to hand off to.
    assert calls[4].system_instructions == FIELDS["math"]
    assert calls[4].handoffs == []
    assert (await Conversation.objects.aget(pk=conversation.pk)).current_agent_name == "Math Tutor"
    assert history.problems(await stored_history(conversation)) == []


@chat_db
async def test_a_math_question_after_history_reaches_the_math_tutor(user, script):
    conversation = await new_conversation(user, "tutor")
    steps = [
        HISTORY,
        [function_call("transfer_to_history_tutor", {}, call_id="call_history")],
        streamed("The Berlin Wall fell in 1989."),
        MATH,
        [function_call("transfer_to_math_tutor", {}, call_id="call_math")],
        streamed("The derivative of x^4 is 4x^3."),
    ]
    with script(steps) as model:
        await turn(user, conversation, "When did the Berlin Wall fall?")
        events = await turn(user, conversation, "Now maths: what is the derivative of x^4?", request_id="r2")

    assert one(events, "run.started")["agent"] == "History Tutor"
    assert one(events, "agent.updated")["agent"] == "Math Tutor"
    reply = await reply_of(events)
    assert reply.status == Message.Status.COMPLETED and reply.agent_name == "Math Tutor"
    assert reply.content == "The derivative of x^4 is 4x^3."
    # The History Tutor was told the question is not its field and offered only the Math Tutor.
    history_call = model.calls[4]
    assert "math question" in history_call.system_instructions and "do not answer it" in history_call.system_instructions
    assert [h.agent_name for h in history_call.handoffs] == ["Math Tutor"]
    assert (await Conversation.objects.aget(pk=conversation.pk)).current_agent_name == "Math Tutor"
    assert history.problems(await stored_history(conversation)) == []


@chat_db
async def test_a_tutor_can_hand_back_to_triage_when_the_subject_is_unclear(user, script):
    conversation = await new_conversation(user, "tutor")
    steps = [
        MATH,
        [function_call("transfer_to_math_tutor", {}, call_id="call_math")],
        streamed("x = 4."),
        HOMEWORK,  # homework, but the check could not tell the subject
        [function_call("transfer_to_tutor_triage", {}, call_id="call_back")],
        [function_call("transfer_to_history_tutor", {}, call_id="call_history")],
        streamed("That was in 1066."),
    ]
    with script(steps) as model:
        await turn(user, conversation, "Solve x + 3 = 7")
        events = await turn(user, conversation, "And the other question from my worksheet?", request_id="r2")

    assert [h.agent_name for h in model.calls[4].handoffs] == ["Tutor Triage"]
    assert sorted(h.agent_name for h in model.calls[5].handoffs) == ["History Tutor", "Math Tutor"]
    assert (await reply_of(events)).agent_name == "History Tutor"


@chat_db
async def test_question_that_is_not_homework_is_blocked_before_the_tutors(user, script):
    conversation = await new_conversation(user, "tutor")
    with script([NOT_HOMEWORK, streamed("Never sent.")]) as model:
        events = await turn(user, conversation, "Give me a chocolate cake recipe")

    tripped = one(events, "guardrail.tripped")
    assert tripped["guardrail"] == "homework" and "math and history homework" in tripped["message"]
    assert one(events, "run.finished")["status"] == "blocked"
    assert len(model.calls) == 1 and model.remaining_steps == 1  # the triage agent never ran
    reply = await reply_of(events)
    assert reply.status == Message.Status.BLOCKED
    assert reply.requests == 1  # the classifier's tokens are counted even when it blocks
    assert await stored_history(conversation) == []


@chat_db
async def test_off_topic_follow_up_to_a_tutor_is_blocked_too_and_the_tutor_stays(user, script):
    conversation = await new_conversation(user, "tutor")
    steps = [
        HISTORY,
        [function_call("transfer_to_history_tutor", {}, call_id="call_handoff")],
        streamed("It fell in 1453."),
        NOT_HOMEWORK,
        HISTORY,
        streamed("Mehmed II ", "led the siege."),
    ]
    with script(steps) as model:
        await turn(user, conversation, "When did Constantinople fall?")
        blocked = await turn(user, conversation, "Book me a flight to Istanbul", request_id="r2")
        third = await turn(user, conversation, "Who led the siege?", request_id="r3")

    assert one(blocked, "run.started")["agent"] == "History Tutor"
    assert one(blocked, "run.finished")["status"] == "blocked"
    # The blocked turn changed nothing: the History Tutor answers next, without the flight.
    assert one(third, "run.started")["agent"] == "History Tutor"
    assert (await reply_of(third)).content == "Mehmed II led the siege."
    assert "flight" not in str(model.last_call.input)
    assert history.problems(model.last_call.input) == []


def test_every_tutor_can_be_found_to_continue_a_conversation():
    spec = get_spec("tutor")

    assert spec.agent_named("Math Tutor") is math_tutor
    assert spec.agent_named("History Tutor") is history_tutor
    assert spec.agent_named("Someone who left") is triage_agent
    # Input guardrails run only for the agent a run starts with: each one carries the check.
    for agent in spec.agents():
        assert "homework" in [g.get_name() for g in agent.input_guardrails], agent.name
