"""Guarded agents stream live: their output guardrails judge the text as it comes, holding back
only what could still become a blocked match; a secret split across deltas never reaches the
client, and a credential in a tool result never leaves the server."""

from __future__ import annotations

import asyncio

import pytest
from agents.testing import function_call

from agents_app import tracing
from agents_app.guardrails import StreamGuard, StreamTripped, redacted
from agents_app.models import KnowledgeArticle, SessionItem, SpanRecord
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    texts,
)
from chat.models import Message, Run
from chat.tests.helpers import connect, of_type, receive_until, send_message
from chat.tests.scripts import streamed

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-proj-" + "Q9w8E7r6T5y4U3i2O1p0A9s8D7f6"


async def test_a_guarded_agents_first_words_arrive_before_the_model_finishes(user, script):
    conversation = await new_conversation(user, "support")
    gate = asyncio.Event()
    with script([streamed("Hello! ", "Quillmate syncs ", "every note.", gate=gate, after=2)]):
        ws = await connect(user)
        await send_message(ws, conversation, "How does sync work?")
        first = (await receive_until(ws, "message.delta"))[-1]
        gate.set()  # only now may the model finish
        rest = await receive_until(ws, "run.finished")
        await ws.disconnect()

    assert first["delta"].startswith("Hello!")
    assert rest[-1]["status"] == "completed"
    assert first["delta"] + "".join(e["delta"] for e in of_type(rest, "message.delta")) == "Hello! Quillmate syncs every note."
    assert not [e for e in rest if e["type"] == "run.progress" and e.get("stage") == "checking"]


async def test_a_secret_split_across_deltas_never_reaches_the_client(user, script):
    conversation = await new_conversation(user, "support")
    with script([streamed("Sure, here it is: ", KEY[:5], KEY[5:17], KEY[17:], " — keep it safe.")]):
        ws = await connect(user)
        await send_message(ws, conversation, "What is the admin key?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    shown = "".join(e["delta"] for e in of_type(events, "message.delta"))
    assert shown == "Sure, here it is: "  # everything before the key, nothing of it
    assert "sk-" not in texts(events) and KEY[8:20] not in texts(events)
    tripped = one(events, "guardrail.tripped")
    assert tripped["guardrail"] == "secret leak" and events[-1]["status"] == "blocked"
    reply = await reply_of(events)
    run = await Run.objects.aget(pk=reply.run_id)
    assert reply.status == Message.Status.BLOCKED and "sk-" not in reply.content and "sk-" not in texts(run.events)
    payloads = [p async for p in SessionItem.objects.values_list("payload", flat=True)]
    assert not any("sk-" in p for p in payloads)  # the blocked turn left the SDK history


async def test_a_reply_claiming_an_unmade_refund_is_stopped_before_the_claim_shows(user, script):
    conversation = await new_conversation(user, "support")
    with script([streamed("Thanks for waiting. ", "Your refund ", "has been issued ", "to your card.")]):
        ws = await connect(user)
        await send_message(ws, conversation, "Where is my money?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    shown = "".join(e["delta"] for e in of_type(events, "message.delta"))
    assert shown == "Thanks for waiting. " and "refund" not in shown
    assert one(events, "guardrail.tripped")["guardrail"] == "unbacked claim" and events[-1]["status"] == "blocked"


async def test_a_credential_in_a_tool_result_is_withheld_everywhere(user, script, settings):
    settings.AGENTS_TRACE_SENSITIVE_DATA = False
    await KnowledgeArticle.objects.acreate(
        title="Connecting the exporter", slug="exporter-key", tags="exporter",
        body=f"Connect the exporter with the team key {KEY} in Settings → Integrations.",
    )
    conversation = await new_conversation(user, "support")
    steps = [[function_call("search_knowledge_base", {"query": "exporter"}, call_id="call_kb")], streamed("Use Settings → Integrations.")]
    with script(steps) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "How do I connect the exporter?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    output = one(events, "tool.output")["output"]
    assert "[withheld: an API key]" in output and "Settings → Integrations" in output
    assert KEY not in texts(events) and events[-1]["status"] == "completed"
    assert KEY not in texts(model.last_call.input)  # the model never saw it either
    reply = await reply_of(events)
    assert KEY not in texts(reply.activity) and KEY not in texts((await Run.objects.aget(pk=reply.run_id)).events)
    payloads = [p async for p in SessionItem.objects.values_list("payload", flat=True)]
    assert not any(KEY in p for p in payloads)


@pytest.mark.parametrize(
    ("deltas", "shown"),
    [
        (["abc ", "def"], "abc def"),
        (["key: s", "k-", "proj-abc"], "key: "),
        (["We opened", " a ticket"], ""),  # held: the sentence mentions a ticket and is not over
        (["Fine. ", "Next."], "Fine. Next."),
    ],
)
async def test_the_guard_releases_only_what_cannot_become_a_match(deltas, shown, user):
    from agents import RunContextWrapper

    from agents_app.context import ChatContext
    from agents_app.registry import get_spec

    support = get_spec("support").agent
    guard = StreamGuard.for_agents([support], RunContextWrapper(context=ChatContext(user=user, conversation=None)))
    released = "".join([await guard.feed(delta) for delta in deltas])
    assert released == shown


async def test_the_guard_trips_on_a_complete_secret(user):
    from agents import RunContextWrapper

    from agents_app.context import ChatContext
    from agents_app.registry import get_spec

    support = get_spec("support").agent
    guard = StreamGuard.for_agents([support], RunContextWrapper(context=ChatContext(user=user, conversation=None)))
    await guard.feed("here: ")
    with pytest.raises(StreamTripped) as tripped:
        await guard.feed(KEY + " ")
    assert tripped.value.guardrail == "secret leak" and "sk-" not in tripped.value.message


def test_redaction_names_what_it_removed():
    assert redacted(f"a {KEY} b") == "a [withheld: an API key] b"



# Formats the guardrail learnt from the catalogue (Stripe) and its supplement (Google).
STRIPE_KEY = "sk_live_" + "51HxQ2eL4kT9vB7mN3pR8sW1yZ6cD0fG5hJ2kL9qX4tV7bN1mC3"
GOOGLE_KEY = "AIza" + "SyD3k9Q2xV7mL4nB8pR1tW6yZ0cF5hJ2gK9"


async def test_stripe_and_google_keys_in_a_help_centre_article_never_leave_the_server(user, script, settings):
    settings.AGENTS_TRACE_SENSITIVE_DATA = True  # the traces hold inputs and outputs: check them too
    settings.AGENTS_TRACE_LOCAL = True
    await KnowledgeArticle.objects.acreate(
        title="Payments and maps", slug="payments-maps", tags="payments, maps",
        body=f"Billing runs on Stripe with {STRIPE_KEY}; the map embed uses {GOOGLE_KEY} (do not share).",
    )
    conversation = await new_conversation(user, "support")
    steps = [[function_call("search_knowledge_base", {"query": "payments maps"}, call_id="call_kb")], streamed("See Billing.")]
    with script(steps) as model:
        ws = await connect(user)
        await send_message(ws, conversation, "How are payments set up?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()
    assert await asyncio.to_thread(tracing.flush, 10)

    output = one(events, "tool.output")["output"]
    assert "[withheld: a Stripe key]" in output and "[withheld: a Google API key]" in output
    reply = await reply_of(events)
    run = await Run.objects.aget(pk=reply.run_id)
    spans = [s async for s in SpanRecord.objects.filter(trace__run=run)]
    assert spans  # the traces were stored, and hold the tool's output
    for where in [texts(events), texts(model.last_call.input), texts(reply.activity), reply.content, texts(run.events),
                  texts([s.data for s in spans]), texts([p async for p in SessionItem.objects.values_list("payload", flat=True)])]:
        assert STRIPE_KEY[8:30] not in where and GOOGLE_KEY[4:30] not in where


async def test_a_stripe_key_split_over_two_deltas_never_reaches_the_client(user, script):
    conversation = await new_conversation(user, "support")
    with script([streamed("The billing key is ", STRIPE_KEY[:14], STRIPE_KEY[14:] + " here.")]):
        ws = await connect(user)
        await send_message(ws, conversation, "What is the billing key?")
        events = await receive_until(ws, "run.finished")
        await ws.disconnect()

    shown = "".join(e["delta"] for e in of_type(events, "message.delta"))
    assert shown == "The billing key is "
    assert "sk_live" not in texts(events) and STRIPE_KEY[14:30] not in texts(events)
    tripped = one(events, "guardrail.tripped")
    assert tripped["guardrail"] == "secret leak" and "a Stripe key" in tripped["message"]


@pytest.mark.parametrize(
    "deltas",
    [
        ["Order QM-10421 ", "ships today."],
        ["Request 550e8400-e29b-", "41d4-a716-446655440000 is done."],
        ["Fixed in commit 3f786850e387", "550fdab836ed7e6dc881de23001b."],
        ["See https://help.quillmate.example/", "articles/sync for details."],
        ["Set DATABASE_URL=postgres://user:password@", "localhost/notes and restart."],
    ],
)
async def test_ordinary_replies_stream_through_the_secret_guard(deltas, user):
    from agents import RunContextWrapper

    from agents_app.context import ChatContext
    from agents_app.registry import get_spec

    support = get_spec("support").agent
    guard = StreamGuard.for_agents([support], RunContextWrapper(context=ChatContext(user=user, conversation=None)))
    released = "".join([await guard.feed(delta) for delta in deltas]) + guard.rest()
    assert released == "".join(deltas)
