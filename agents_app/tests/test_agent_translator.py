"""The translator through the chat: agents called as tools on the app's model, their tokens
on the reply, the custom output extractor, and the French tool offered to staff only."""

from __future__ import annotations

import pytest
from agents.testing import function_call
from asgiref.sync import sync_to_async

from agents_app.catalog.translator import Translation
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    structured,
    turn,
)
from chat.tests.factories import UserFactory
from chat.tests.scripts import streamed

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)


def tool_names(call) -> set[str]:
    return {tool.name for tool in call.tools}


@chat_db
async def test_spanish_translation_runs_the_spanish_agent_as_a_tool(user, script):
    conversation = await new_conversation(user, "translator")
    steps = [
        [function_call("translate_to_spanish", {"input": "Good morning, team!"}, call_id="call_es")],
        structured(Translation(text="¡Buenos días, equipo!", notes="")),  # the nested Spanish agent
        streamed("**Spanish:** ", "¡Buenos días, equipo!"),
    ]
    with script(steps) as model:
        events = await turn(user, conversation, "Translate 'Good morning, team!' to Spanish")

    nested = model.calls[1]
    assert nested.input[-1]["content"] == "Good morning, team!"
    assert "into Spanish" in nested.system_instructions
    # The extractor handed the orchestrator the text, not the agent's JSON.
    output = one(events, "tool.output")
    assert output["output"] == "¡Buenos días, equipo!" and output["failed"] is False
    reply = await reply_of(events)
    assert reply.content == "**Spanish:** ¡Buenos días, equipo!"
    assert (reply.requests, reply.total_tokens) == (3, 3 * 49)  # the nested run's tokens too


@chat_db
async def test_translator_notes_reach_the_orchestrator(user, script):
    conversation = await new_conversation(user, "translator")
    steps = [
        [function_call("translate_to_spanish", {"input": "You're welcome"}, call_id="call_es")],
        structured(Translation(text="De nada", notes="Informal; 'No hay de qué' is more formal.")),
        streamed("De nada."),
    ]
    with script(steps):
        events = await turn(user, conversation, "Spanish for you're welcome?")

    assert one(events, "tool.output")["output"] == "De nada\n\n(Translator's notes: Informal; 'No hay de qué' is more formal.)"


@chat_db
async def test_french_is_offered_to_staff_only(user, script):
    staff = await sync_to_async(UserFactory)(is_staff=True)
    mine, theirs = await new_conversation(user, "translator"), await new_conversation(staff, "translator")
    with script([streamed("Only Spanish is available to you."), streamed("Voilà.")]) as model:
        await turn(user, mine, "Translate 'hello' to French")
        user_call = model.calls[0]
        await turn(staff, theirs, "Translate 'hello' to French")
        staff_call = model.calls[1]

    assert tool_names(user_call) == {"translate_to_spanish"}
    assert tool_names(staff_call) == {"translate_to_spanish", "translate_to_french"}


@chat_db
async def test_staff_get_a_french_translation(script):
    staff = await sync_to_async(UserFactory)(is_staff=True)
    conversation = await new_conversation(staff, "translator")
    steps = [
        [function_call("translate_to_french", {"input": "See you tomorrow"}, call_id="call_fr")],
        structured(Translation(text="À demain", notes="")),
        streamed("**French:** À demain"),
    ]
    with script(steps) as model:
        events = await turn(staff, conversation, "French for 'see you tomorrow'")

    assert "into French" in model.calls[1].system_instructions
    assert one(events, "tool.output")["output"] == "À demain"
