"""The assistant through the chat: its tools, and model retries (rate limits) end to end."""

from __future__ import annotations

import httpx2
import openai
import pytest
from agents.testing import function_call

from agents_app import history, providers
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    turn,
)
from chat.models import Message
from chat.tests.helpers import of_type, stored_history
from chat.tests.scripts import streamed

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)


def rate_limited() -> openai.RateLimitError:
    request = httpx2.Request("POST", "https://api.openai.com/v1/responses")
    response = httpx2.Response(429, request=request, json={"error": {"message": "Rate limit reached"}})
    return openai.RateLimitError("Error code: 429", response=response, body=None)


@pytest.fixture
def fast_retries(settings):
    settings.AGENTS_MODEL_MAX_RETRIES = 2
    settings.AGENTS_MODEL_RETRY_DELAY = 0.001
    providers.reset()
    yield
    providers.reset()


@chat_db
async def test_date_question_is_answered_with_the_date_tool(user, script):
    conversation = await new_conversation(user, "assistant")
    with script([[function_call("get_current_date", {}, call_id="call_date")], streamed("It is ", "Monday.")]):
        events = await turn(user, conversation, "What's the date?")

    called, output = one(events, "tool.called"), one(events, "tool.output")
    assert called["name"] == "get_current_date" and output["failed"] is False
    assert any(month in output["output"] for month in ("January", "February", "March", "April", "May", "June", "July",
                                                        "August", "September", "October", "November", "December"))
    assert (await reply_of(events)).content == "It is Monday."


@chat_db
async def test_rate_limited_request_is_retried_and_the_reply_arrives(user, script, fast_retries):
    conversation = await new_conversation(user, "assistant")
    with script([rate_limited(), streamed("Made it ", "after a retry.")]) as model:
        events = await turn(user, conversation, "Hello")

    assert len(model.calls) == 2
    assert one(events, "run.finished")["status"] == "completed"
    assert "".join(e["delta"] for e in of_type(events, "message.delta")) == "Made it after a retry."
    assert (await reply_of(events)).status == Message.Status.COMPLETED


@chat_db
async def test_rate_limits_that_persist_end_as_a_failed_reply_with_a_clear_error(user, script, fast_retries):
    conversation = await new_conversation(user, "assistant")
    with script([rate_limited(), rate_limited(), rate_limited()]) as model:
        events = await turn(user, conversation, "Hello")

    assert len(model.calls) == 3  # the first try and two retries
    finished = one(events, "run.finished")
    assert finished["status"] == "failed"
    assert finished["error"] == "The model provider is rate-limiting requests right now. Please try again in a moment."
    reply = await reply_of(events)
    assert reply.status == Message.Status.FAILED and reply.error == finished["error"]
    assert history.problems(await stored_history(conversation)) == []
