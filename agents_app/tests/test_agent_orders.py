"""Order status through the chat: a tool call scoped to the signed-in user, then a structured
`OrderStatus` final output shown as a card, live and after a reload."""

from __future__ import annotations

import io

import pytest
from agents.testing import function_call
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.urls import reverse

from agents_app.catalog.orders import OrderStatus
from agents_app.models import Order
from agents_app.tests.chatting import (
    fast_password_hashing,  # noqa: F401 (autouse fixture)
    new_conversation,
    one,
    reply_of,
    structured,
    turn,
)
from agents_app.tests.factories import OrderFactory

# Socket tests: the run executes in another task, so the data must be committed.
chat_db = pytest.mark.django_db(transaction=True)

def lookup(number: str) -> list:
    return [function_call("lookup_order", {"order_number": number}, call_id="call_order")]


SHIPPED = {
    "order_number": "QM-10421",
    "found": True,
    "status": "shipped",
    "items": [{"name": "Notebook stand", "quantity": 1}],
    "total": "$49.90",
    "carrier": "DHL",
    "estimated_delivery": "2026-12-03",
    "summary": "Order QM-10421 (1 × Notebook stand, $49.90) has shipped with DHL and should arrive on "
    "Thursday 3 December 2026.",
}


@chat_db
async def test_order_status_is_looked_up_and_the_card_is_built_from_the_order_record(
    user, script, async_client, settings
):
    await sync_to_async(OrderFactory)(owner=user, number="QM-10421")
    conversation = await new_conversation(user, "orders")
    with script([lookup("qm 10421")]) as model:
        events = await turn(user, conversation, "Where is my order qm 10421?")

    output = one(events, "tool.output")
    assert output["failed"] is False
    assert '"status": "shipped"' in output["output"] and '"carrier": "DHL"' in output["output"]
    # The first step had to be a tool call, and no model wrote the answer: the record did.
    assert len(model.calls) == 1 and model.calls[0].model_settings.tool_choice == "required"

    completed = one(events, "message.completed")
    assert completed["structured"] == {"type": "OrderStatus", "data": SHIPPED}
    card = completed["card"]
    assert "Order QM-10421" in card and "Shipped" in card and "1 × Notebook stand" in card
    assert "<dt>Carrier</dt><dd>DHL</dd>" in card and "should arrive on Thursday 3 December 2026" in card

    # After a reload the page renders the same card from the stored message.
    settings.AGENTS_MODEL_PROVIDER = "scripted"
    await async_client.aforce_login(user)
    page = (await async_client.get(reverse("chat:conversation_detail", args=[conversation.public_id]))).content.decode()
    assert 'class="order-card"' in page and "1 × Notebook stand" in page


@chat_db
async def test_a_model_cannot_misreport_what_the_lookup_found(user, script):
    await sync_to_async(OrderFactory)(owner=user, number="QM-10388", status=Order.Status.DELIVERED, carrier="UPS")
    conversation = await new_conversation(user, "orders")
    invented = OrderStatus(
        order_number="QM-10388", found=True, status="processing", items=[], total=None, carrier=None,
        estimated_delivery=None, summary="It is still being processed.",
    )  # fmt: skip
    with script([lookup("QM-10388"), structured(invented)]) as model:
        events = await turn(user, conversation, "Did QM-10388 arrive?")

    data = (await reply_of(events)).structured["data"]
    assert data["status"] == "delivered" and data["summary"].startswith("Order QM-10388 (1 × Notebook stand, $49.90) was delivered by UPS.")
    assert model.remaining_steps == 1  # the invented answer was never asked for


@chat_db
async def test_someone_elses_order_number_is_not_found(user, other_user, script):
    await sync_to_async(OrderFactory)(owner=other_user, number="QM-10421", carrier="UPS")
    conversation = await new_conversation(user, "orders")
    with script([lookup("QM-10421")]):
        events = await turn(user, conversation, "Where is QM-10421?")

    output = one(events, "tool.output")["output"]
    assert '"found": false' in output
    assert "UPS" not in output and "Notebook stand" not in output
    card = one(events, "message.completed")["card"]
    assert "No order with this number on your account." in card and "UPS" not in card
    data = (await reply_of(events)).structured["data"]
    assert data["found"] is False and "could not find an order QM-10421" in data["summary"]


@chat_db
async def test_without_an_order_number_the_users_recent_orders_are_listed(user, other_user, script):
    await sync_to_async(OrderFactory)(owner=user, number="QM-10421")
    await sync_to_async(OrderFactory)(owner=user, number="QM-10422", status=Order.Status.PROCESSING)
    await sync_to_async(OrderFactory)(owner=other_user, number="QM-99999")
    conversation = await new_conversation(user, "orders")
    with script([[function_call("list_orders", {}, call_id="call_list")]]):
        events = await turn(user, conversation, "Where is my parcel?")

    data = (await reply_of(events)).structured["data"]
    assert data["found"] is False and data["order_number"] == ""
    assert "QM-10421 (shipped" in data["summary"] and "QM-10422 (processing" in data["summary"]
    assert "QM-99999" not in data["summary"] and data["summary"].endswith("Which one would you like to know about?")
    card = one(events, "message.completed")["card"]
    assert "Your orders" in card and "No order with this number" not in card


@pytest.mark.django_db
def test_demo_user_gets_demo_orders(settings):
    settings.DEBUG = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    call_command("ensure_demo_user", stdout=io.StringIO())
    call_command("ensure_demo_user", stdout=io.StringIO())  # idempotent

    orders = Order.objects.filter(owner__email="demo@example.com")
    assert orders.count() == 3
    assert orders.get(number="QM-10421").status == "shipped"


@pytest.mark.parametrize("typed", ["QM-10421", "qm 10421", "#QM10421", " qm-10421 "])
def test_order_numbers_are_recognised_however_they_are_typed(typed):
    from agents_app.catalog.orders import normalise_order_number

    assert normalise_order_number(typed) == "QM-10421"
