"""Driving a catalog agent through the socket and the run service, one turn at a time."""

from __future__ import annotations

import pytest
from agents.testing import assistant_message
from asgiref.sync import sync_to_async
from pydantic import BaseModel

from chat import services
from chat.models import Conversation, Message
from chat.tests.helpers import connect, of_type, receive_until, send_message


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The factories' users get a real password hash; the default hasher costs ~0.3 s each.
    Imported by the test modules that create users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


async def new_conversation(user, agent_key: str) -> Conversation:
    return await sync_to_async(services.conversation_create)(owner=user, agent_key=agent_key)


async def turn(user, conversation: Conversation, content: str, *, request_id: str = "r1") -> list[dict]:
    """Send one message over a socket; every event up to `run.finished`."""
    ws = await connect(user)
    try:
        await send_message(ws, conversation, content, request_id=request_id)
        return await receive_until(ws, "run.finished")
    finally:
        await ws.disconnect()


def one(events: list[dict], kind: str) -> dict:
    found = of_type(events, kind)
    assert len(found) == 1, f"expected one {kind}, got {[e['type'] for e in events]}"
    return found[0]


async def reply_of(events: list[dict]) -> Message:
    return await Message.objects.aget(public_id=one(events, "message.completed")["message"])


def structured(output: BaseModel) -> list:
    """A model step that answers with a structured output."""
    return [assistant_message(output.model_dump_json())]


def texts(items) -> str:
    """Every text in a model input, for 'was this sent to the model?' checks."""
    import json

    return json.dumps(items, ensure_ascii=False) if not isinstance(items, str) else items
