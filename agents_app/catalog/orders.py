"""Order status: the agent looks the order up with a tool, then answers with a structured
`OrderStatus`, which the chat renders as a card (templates/chat/cards/OrderStatus.html)."""

from __future__ import annotations

import re
from typing import Any, Literal

from agents import Agent, RunContextWrapper
from asgiref.sync import sync_to_async
from pydantic import BaseModel, Field

from agents_app import services
from agents_app.context import ChatContext
from agents_app.guardrails import INPUT_GUARDRAILS, OUTPUT_GUARDRAILS
from agents_app.models import Order
from agents_app.registry import AgentSpec
from agents_app.tooling import ToolError, catalog_tool


class OrderLine(BaseModel):
    name: str
    quantity: int


class OrderStatus(BaseModel):
    order_number: str = Field(description="The order number as the user gave it, upper-cased.")
    found: bool = Field(description="False when lookup_order found no such order on the user's account.")
    status: Literal["processing", "shipped", "delivered", "cancelled", "unknown"]
    items: list[OrderLine]
    total: str | None = Field(description='Order total with currency, e.g. "$59.90"; null if not found.')
    carrier: str | None
    estimated_delivery: str | None = Field(description="ISO date (YYYY-MM-DD) or null.")
    summary: str = Field(description="One or two friendly sentences answering the user's question.")


_NUMBER = re.compile(r"^#?\s*([A-Z]+)[\s\-]*(\d+)$")


def normalise_order_number(number: str) -> str:
    """"qm 10421", "#QM10421" and "QM-10421" are the same order: users type them every way."""
    cleaned = number.strip().upper()
    match = _NUMBER.match(cleaned)
    return f"{match[1]}-{match[2]}" if match else cleaned.lstrip("#").strip()


def order_facts(order: Order) -> dict[str, Any]:
    return {
        "found": True,
        "order_number": order.number,
        "status": order.status,
        "items": [{"name": line.get("name", ""), "quantity": line.get("quantity", 1)} for line in order.items],
        "total": f"${order.total:.2f}",
        "carrier": order.carrier or None,
        "estimated_delivery": order.estimated_delivery.isoformat() if order.estimated_delivery else None,
        "ordered_on": order.created_at.date().isoformat(),
    }


@catalog_tool
async def lookup_order(ctx: RunContextWrapper[ChatContext], order_number: str) -> dict[str, Any]:
    """Look up one of the signed-in user's orders by its number.

    Args:
        order_number: The order number the user gave, e.g. "QM-10421".
    """
    number = normalise_order_number(order_number)
    # Scoped to the signed-in user: someone else's order number is simply "not found", so the
    # answer reveals neither its details nor that it exists.
    order = await Order.objects.for_user(ctx.context.user).filter(number__iexact=number).afirst()
    if order is None:
        return {"found": False, "order_number": number, "message": "No order with this number on the user's account."}
    return order_facts(order)


@catalog_tool(needs_approval=True)
async def refund_order(ctx: RunContextWrapper[ChatContext], order_number: str, reason: str) -> str:
    """Refund one of the signed-in user's orders. The user must approve it before it happens.

    Args:
        order_number: The order to refund, e.g. "QM-10421".
        reason: Why the user wants the refund, in their words.
    """
    number = normalise_order_number(order_number)
    try:
        order = await sync_to_async(services.order_refund)(owner=ctx.context.user, number=number, reason=reason)
    except services.RefundRefused as exc:
        raise ToolError(f"no refund: {exc}") from None
    return f"Refund of ${order.total:.2f} issued for order {order.number}."


agent = Agent[ChatContext](
    name="Order Status",
    instructions=(
        "You tell signed-in customers where their orders are. When the user gives an order "
        "number, call `lookup_order` with it, then answer with the order status built only from "
        "the tool's result; never guess a status, date or carrier. If the order was not found, "
        "set found to false and status to unknown, leave the other fields empty, and in the "
        "summary ask the user to check the number. If the user gave no order number, set found "
        "to false, status to unknown and ask for it in the summary. When the user asks for a "
        "refund, call `refund_order` (the user approves it in the chat before it happens) and "
        "say in the summary whether the refund was made."
    ),
    tools=[lookup_order, refund_order],
    output_type=OrderStatus,
    input_guardrails=INPUT_GUARDRAILS,
    output_guardrails=OUTPUT_GUARDRAILS,
)

spec = AgentSpec(
    key="orders",
    title="Order status",
    description="Where is my order? Looks up your orders, answers with a status card, and refunds with your approval.",
    agent=agent,
    max_turns=4,
    workflow_name="Order status",
)
