"""Socket helpers for tests that drive the chat consumer with WebsocketCommunicator."""

from __future__ import annotations

import contextlib

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from agents_app.session import DjangoSession
from chat.routing import websocket_urlpatterns


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator: WebsocketCommunicator, kind: str, *, timeout: float = 10) -> list[dict]:
    """Every event up to and including the first of type `kind`."""
    events = []
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        events.append(event)
        if event["type"] == kind:
            return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


async def send_message(communicator, conversation, content="Hello", request_id="r1") -> None:
    await communicator.send_json_to(
        {"type": "message.send", "conversation": str(conversation.public_id), "content": content, "request_id": request_id}
    )


async def stored_history(conversation) -> list[dict]:
    return await DjangoSession(conversation.session_id).get_items()


@contextlib.contextmanager
def extra_tools(agent_key: str, *tools):
    """Give a catalog agent extra tools for one test (a tool that needs approval, one that
    hangs, ...), restoring its own afterwards."""
    from agents_app.registry import get_spec

    agent = get_spec(agent_key).agent
    original = agent.tools
    agent.tools = [*original, *tools]
    try:
        yield agent
    finally:
        agent.tools = original
