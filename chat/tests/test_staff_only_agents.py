"""The diagnostics agent (AGENTS_DIAGNOSTICS=1) is for staff only: anyone else neither sees it
in the picker or GET /api/agents, nor creates a conversation with it (page form, socket, HTTP
API: `unknown_agent`), nor runs one created earlier. Staff do all of it."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agents_app import registry
from chat.models import Conversation, Message
from chat.tests.api_helpers import api_client, token_for
from chat.tests.factories import UserFactory
from chat.tests.helpers import connect, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def diagnostics_on(settings):
    settings.AGENTS_DIAGNOSTICS = True
    registry._specs.cache_clear()
    yield
    registry._specs.cache_clear()


@pytest.fixture
async def staff():
    return await sync_to_async(UserFactory)(is_staff=True)


async def _picker(user) -> str:
    client = AsyncClient()
    await client.aforce_login(user)
    return (await client.get("/")).content.decode()


async def _agents(user) -> set[str]:
    response = await api_client(await token_for(user)).get("/api/agents")
    return {agent["key"] for agent in json.loads(response.content)["agents"]}


async def test_only_staff_see_the_diagnostics_agent(user, staff):
    assert "diagnostics" not in await _agents(user) and "assistant" in await _agents(user)
    assert "diagnostics" in await _agents(staff)
    assert 'value="diagnostics"' not in await _picker(user)
    assert 'value="diagnostics"' in await _picker(staff)


async def test_a_user_who_is_not_staff_cannot_create_a_diagnostics_conversation(user):
    ws = await connect(user)
    await ws.send_json_to({"type": "conversation.create", "agent": "diagnostics"})
    over_socket = await ws.receive_json_from()
    await ws.disconnect()
    over_http = await api_client(await token_for(user)).post(
        "/api/conversations", {"agent": "diagnostics"}, content_type="application/json"
    )
    page = AsyncClient()
    await page.aforce_login(user)
    from_the_page = await page.post("/c/new/", {"agent": "diagnostics"})

    assert over_socket["code"] == "unknown_agent" and "diagnostics" not in over_socket["message"].split("Available:")[1]
    assert over_http.status_code == 400 and json.loads(over_http.content)["error"]["code"] == "unknown_agent"
    assert from_the_page.status_code == 400 and "There is no agent “diagnostics”." in from_the_page.content.decode()
    assert not await Conversation.objects.filter(agent_key="diagnostics").aexists()


async def test_staff_create_and_run_a_diagnostics_conversation(staff):
    ws = await connect(staff)
    await ws.send_json_to({"type": "conversation.create", "agent": "diagnostics"})
    created = await ws.receive_json_from()
    await ws.send_json_to({"type": "message.send", "conversation": created["conversation"], "content": "Hello"})
    events = await receive_until(ws, "run.finished")
    await ws.disconnect()
    page = AsyncClient()
    await page.aforce_login(staff)

    assert created["type"] == "conversation.created" and created["agent"] == "diagnostics"
    assert events[-1]["status"] == "completed"
    assert (await page.post("/c/new/", {"agent": "diagnostics"})).status_code == 302


async def test_a_user_who_is_not_staff_cannot_run_a_diagnostics_conversation_created_earlier(user):
    earlier = await Conversation.objects.acreate(owner=user, agent_key="diagnostics", current_agent_name="Diagnostics")
    ws = await connect(user)
    await ws.send_json_to({"type": "message.send", "conversation": str(earlier.public_id), "content": "Hello"})
    over_socket = await ws.receive_json_from()
    await ws.disconnect()
    over_http = await api_client(await token_for(user)).post(
        f"/api/conversations/{earlier.public_id}/messages", {"content": "Hello"}, content_type="application/json"
    )

    assert over_socket["type"] == "error" and over_socket["code"] == "unknown_agent"
    assert over_http.status_code == 400 and json.loads(over_http.content)["error"]["code"] == "unknown_agent"
    assert not await Message.objects.filter(conversation=earlier).aexists()
