"""A model per conversation (AGENTS_MODELS): users pick one when they start a conversation or
with any message, over the socket and the HTTP API; it sticks between turns; an agent may
name its own; a model users may not pick is refused before anything is stored. The models
here are the rule-based scripted model under different names, so each reply says which one
answered (`Message.model`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from agents_app import providers, registry
from chat.models import Conversation, Message
from chat.tests.api_helpers import SseReader, api_client, events, token_for
from chat.tests.helpers import connect, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [
    {"key": "quick", "label": "Quick", "provider": "scripted", "name": "scripted-quick"},
    {"key": "careful", "label": "Careful", "provider": "scripted", "name": "scripted-careful"},
    {"key": "internal", "provider": "scripted", "name": "scripted-internal", "selectable": False},
]


@pytest.fixture(autouse=True)
def _models(settings):
    settings.AGENTS_MODELS = MODELS
    providers.reset()
    yield
    providers.reset()


@pytest.fixture
async def api(user):
    return api_client(await token_for(user))


async def post(api, path: str, payload: dict):
    return await api.post(path, json.dumps(payload), content_type="application/json")


async def say(api, conversation: Conversation, content: str, **fields) -> list[dict]:
    response = await post(api, f"/api/conversations/{conversation.public_id}/messages", {"content": content, **fields})
    assert response.status_code == 200, response.content
    return events(await SseReader(response.streaming_content).rest())


async def replies(conversation: Conversation) -> list[str]:
    return [m.model async for m in Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT).order_by("created_at", "id")]


async def test_the_picked_model_answers_and_stays_until_the_user_switches(api, user):
    created = await post(api, "/api/conversations", {"agent": "assistant", "model": "careful"})
    assert created.status_code == 201
    assert json.loads(created.content)["conversation"]["model"] == "careful"
    conversation = await Conversation.objects.aget(owner=user)

    first = await say(api, conversation, "Hello")
    await say(api, conversation, "And again", model="quick")
    await say(api, conversation, "Once more")

    assert next(e for e in first if e["type"] == "usage")["model"] == "scripted-careful"
    assert await replies(conversation) == ["scripted-careful", "scripted-quick", "scripted-quick"]
    await conversation.arefresh_from_db()
    assert conversation.model_key == "quick"


async def test_a_model_users_may_not_pick_is_refused_and_nothing_is_stored(api, user):
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", model_key="careful")
    for model in ("internal", "gpt-9", ""):
        response = await post(api, f"/api/conversations/{conversation.public_id}/messages", {"content": "Hi", "model": model})
        error = json.loads(response.content)["error"]
        assert (response.status_code, error["code"]) == (400, "unknown_model")
        assert "quick, careful" in error["message"]
    refused = await post(api, "/api/conversations", {"agent": "assistant", "model": "internal"})
    assert refused.status_code == 400

    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert await Conversation.objects.filter(owner=user).acount() == 1
    await conversation.arefresh_from_db()
    assert conversation.model_key == "careful"


async def test_the_models_endpoint_lists_what_users_may_pick_with_the_default(api, settings):
    settings.AGENTS_DEFAULT_MODEL = "careful"
    listed = json.loads((await api.get("/api/models")).content)["models"]
    assert listed == [
        {"key": "quick", "label": "Quick", "default": False},
        {"key": "careful", "label": "Careful", "default": True},
    ]


async def test_without_a_catalogue_there_is_one_model_named_after_the_provider(api, settings):
    settings.AGENTS_MODELS = []
    listed = json.loads((await api.get("/api/models")).content)["models"]
    assert listed == [{"key": "default", "label": "scripted", "default": True}]


async def test_an_agent_runs_on_its_own_model_unless_the_user_picks_another(api, user, monkeypatch):
    spec = registry.get_spec("assistant")
    monkeypatch.setitem(registry._specs(), "assistant", dataclasses.replace(spec, model="internal"))
    own = await Conversation.objects.acreate(owner=user, agent_key="assistant")
    picked = await Conversation.objects.acreate(owner=user, agent_key="assistant", model_key="quick")

    await say(api, own, "Hello")
    await say(api, picked, "Hello")

    assert await replies(own) == ["scripted-internal"]  # not pickable, but the agent's own
    assert await replies(picked) == ["scripted-quick"]
    agents = json.loads((await api.get("/api/agents")).content)["agents"]
    assert next(a for a in agents if a["key"] == "assistant")["model"] == "internal"


async def test_the_socket_picks_a_model_when_creating_and_with_a_message(user):
    ws = await connect(user)
    await ws.send_json_to({"type": "conversation.create", "agent": "assistant", "model": "quick"})
    created = (await receive_until(ws, "conversation.created"))[-1]
    assert created["model"] == "quick"
    conversation_id = created["conversation"]
    await ws.send_json_to({"type": "message.send", "conversation": conversation_id, "content": "Hi"})
    first = (await receive_until(ws, "usage"))[-1]
    await receive_until(ws, "run.finished")
    await ws.send_json_to({"type": "message.send", "conversation": conversation_id, "content": "Hi", "model": "careful"})
    second = (await receive_until(ws, "usage"))[-1]
    await receive_until(ws, "run.finished")
    await ws.send_json_to({"type": "message.send", "conversation": conversation_id, "content": "Hi", "model": "internal"})
    refused = (await receive_until(ws, "error"))[-1]
    await ws.disconnect()

    assert (first["model"], second["model"]) == ("scripted-quick", "scripted-careful")
    assert refused["code"] == "unknown_model"


@pytest.mark.parametrize(
    ("models", "named"),
    [
        ({"provider": "scripted"}, "needs a 'key'"),
        ([{"key": "a", "provider": "claude"}], "'provider' must be one of"),
        ([{"key": "a", "temperature": 1}], "unknown field(s) temperature"),
        ([{"key": "a"}, {"key": "a"}], "same 'key'"),
    ],
)
def test_a_malformed_catalogue_is_refused_naming_the_entry(settings, models, named):
    settings.AGENTS_MODELS = models if isinstance(models, list) else [models]
    with pytest.raises(ImproperlyConfigured, match=named.replace("(", r"\(").replace(")", r"\)")):
        providers.catalogue()


def test_a_default_model_that_is_not_listed_is_refused(settings):
    settings.AGENTS_DEFAULT_MODEL = "missing"
    with pytest.raises(ImproperlyConfigured, match="AGENTS_DEFAULT_MODEL 'missing'"):
        providers.catalogue()
