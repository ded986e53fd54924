"""Editing the last question or regenerating the last reply replaces the turn everywhere:
in the visible conversation and in the SDK history the model reads."""

from __future__ import annotations

import asyncio

import pytest

from agents_app import history
from chat.models import Conversation, Message
from chat.tests.helpers import connect, of_type, receive_until, send_message, stored_history
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def conversation(user):
    return await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")


async def visible(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) async for m in Message.objects.filter(conversation=conversation)]


async def test_regenerate_replaces_the_last_reply_in_the_page_and_in_the_model_history(user, conversation, script):
    with script([streamed("First answer."), streamed("Second answer."), streamed("Third answer.")]) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "Question one")
        await receive_until(ws, "run.finished")
        await send_message(ws, conversation, "Question two", request_id="r2")
        first = await receive_until(ws, "run.finished")
        await ws.send_json_to({"type": "message.regenerate", "conversation": str(conversation.public_id), "request_id": "r3"})
        again = await receive_until(ws, "run.finished")
        await ws.disconnect()

    truncated = of_type(again, "conversation.truncated")[0]
    old_ids = {of_type(first, "message.created")[0]["message"], of_type(first, "message.completed")[0]["message"]}
    assert set(truncated["messages"]) == old_ids
    assert await visible(conversation) == [
        ("user", "Question one"), ("assistant", "First answer."), ("user", "Question two"), ("assistant", "Third answer."),
    ]
    sent = [(i.get("role"), i.get("content") if isinstance(i.get("content"), str) else "…") for i in model.last_call.input]
    assert sent == [("user", "Question one"), ("assistant", "…"), ("user", "Question two")]
    items = await stored_history(conversation)
    assert history.problems(items) == [] and len(items) == 4


async def test_editing_the_last_question_answers_the_new_text(user, conversation, script):
    with script([streamed("About cats."), streamed("About dogs.")]) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "Tell me about cats")
        first = await receive_until(ws, "run.finished")
        question = of_type(first, "message.created")[0]["message"]
        await ws.send_json_to(
            {"type": "message.edit", "conversation": str(conversation.public_id), "message": question, "content": "Tell me about dogs"}
        )
        await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert await visible(conversation) == [("user", "Tell me about dogs"), ("assistant", "About dogs.")]
    assert [i["content"] for i in model.last_call.input if i.get("role") == "user"] == ["Tell me about dogs"]
    assert history.problems(await stored_history(conversation)) == []


async def test_only_the_last_question_can_be_edited_and_not_during_a_run(user, conversation, script):
    gate = asyncio.Event()
    with script([streamed("One."), streamed("Two", ".", gate=gate)]):
        ws = await connect(user)
        await send_message(ws, conversation, "First")
        first = await receive_until(ws, "run.finished")
        await send_message(ws, conversation, "Second", request_id="r2")
        await receive_until(ws, "message.delta")

        old_question = of_type(first, "message.created")[0]["message"]
        await ws.send_json_to({"type": "message.regenerate", "conversation": str(conversation.public_id), "request_id": "during"})
        busy = await receive_until(ws, "error")
        gate.set()
        await receive_until(ws, "run.finished")
        await ws.send_json_to(
            {"type": "message.edit", "conversation": str(conversation.public_id), "message": old_question, "content": "Edited"}
        )
        refused = await receive_until(ws, "error")
        await ws.disconnect()

    assert busy[-1]["code"] == "busy"
    assert refused[-1]["code"] == "not_editable"
    assert [c for r, c in await visible(conversation) if r == "user"] == ["First", "Second"]


async def test_regenerate_in_an_empty_conversation_is_refused(user, conversation):
    ws = await connect(user)
    await ws.send_json_to({"type": "message.regenerate", "conversation": str(conversation.public_id)})
    error = await ws.receive_json_from()
    await ws.disconnect()
    assert error["code"] == "not_editable"
    assert not await Message.objects.filter(conversation=conversation).aexists()
