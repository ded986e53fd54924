"""Order status: the agent looks the order up with a tool and answers with a structured
`OrderStatus`, which the chat renders as a card (templates/chat/cards/OrderStatus.html).

Every reply starts with a lookup (`tool_choice="required"`): the order asked about, the user's
recent orders when they gave no number, or the refund they asked for (which waits for their
approval). The answer is then built from the tool's result by code (`answer_from_tools`), not
written by the model: the status, dates, carrier and whether a refund was made are the
database's, so no model can report a delivered order as "processing" or promise a refund that
was not made.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from agents import Agent, FunctionToolResult, ModelSettings, RunContextWrapper, ToolsToFinalOutputResult
from asgiref.sync import sync_to_async
from pydantic import BaseModel, Field

from agents_app import services
from agents_app.context import ChatContext
from agents_app.guardrails import INPUT_GUARDRAILS, OUTPUT_GUARDRAILS, record_action
from agents_app.models import Order
from agents_app.registry import AgentSpec
from agents_app.tooling import TOOL_FAILURE_PREFIX, ToolError, catalog_tool


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
        "refunded_on": order.refunded_at.date().isoformat() if order.refunded_at else None,
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


@catalog_tool
async def list_orders(ctx: RunContextWrapper[ChatContext]) -> dict[str, Any]:
    """List the signed-in user's most recent orders, newest first. Call it when the user asks
    about an order or a parcel without giving an order number."""
    orders = [order async for order in Order.objects.for_user(ctx.context.user).order_by("-created_at")[:5]]
    return {"orders": [order_facts(order) for order in orders]}


@catalog_tool(needs_approval=True)
async def refund_order(ctx: RunContextWrapper[ChatContext], order_number: str, reason: str) -> dict[str, Any]:
    """Refund one of the signed-in user's orders. The user approves it in the chat before it happens.

    Args:
        order_number: The order to refund, e.g. "QM-10421".
        reason: Why the user wants the refund, in their words.
    """
    number = normalise_order_number(order_number)
    try:
        order = await sync_to_async(services.order_refund)(owner=ctx.context.user, number=number, reason=reason)
    except services.RefundRefused as exc:
        raise ToolError(f"no refund: {exc}") from None
    record_action(ctx, "refund")
    return {**order_facts(order), "refunded": True, "message": f"Refund of ${order.total:.2f} issued for order {order.number}."}


# --- the answer, from the tools' results ---------------------------------------------


def _day(iso: str | None) -> str:
    if not iso:
        return ""
    day = date.fromisoformat(iso)
    return f"{day:%A} {day.day} {day:%B %Y}"


def _items(facts: dict[str, Any]) -> str:
    return ", ".join(f"{line['quantity']} × {line['name']}" for line in facts.get("items", []))


def describe(facts: dict[str, Any]) -> str:
    """One or two sentences a customer can rely on: only what the order record says."""
    number, status, carrier = facts["order_number"], facts["status"], facts.get("carrier")
    contents = f" ({_items(facts)}, {facts['total']})" if facts.get("items") else ""
    if status == "shipped":
        sentence = f"Order {number}{contents} has shipped" + (f" with {carrier}" if carrier else "")
        eta = _day(facts.get("estimated_delivery"))
        sentence += f" and should arrive on {eta}." if eta else "."
    elif status == "delivered":
        sentence = f"Order {number}{contents} was delivered" + (f" by {carrier}." if carrier else ".")
    elif status == "processing":
        sentence = f"Order {number}{contents} is being prepared and has not shipped yet."
    elif status == "cancelled":
        sentence = f"Order {number}{contents} was cancelled, so it will not be delivered."
    else:
        sentence = f"Order {number}{contents} has the status {status}."
    if facts.get("refunded_on"):
        sentence += f" It was refunded on {_day(facts['refunded_on'])}."
    return sentence


def status_from_facts(facts: dict[str, Any], *, summary: str | None = None) -> OrderStatus:
    if not facts.get("found"):
        number = facts.get("order_number", "")
        return OrderStatus(
            order_number=number, found=False, status="unknown", items=[], total=None, carrier=None,
            estimated_delivery=None,
            summary=summary or f"I could not find an order {number} on your account. Please check the number "
            "(it looks like QM-12345).",
        )  # fmt: skip
    return OrderStatus(
        order_number=facts["order_number"],
        found=True,
        status=facts["status"],
        items=[OrderLine(**line) for line in facts.get("items", [])],
        total=facts.get("total"),
        carrier=facts.get("carrier"),
        estimated_delivery=facts.get("estimated_delivery"),
        summary=summary or describe(facts),
    )


def _no_refund(output: str) -> OrderStatus:
    if output.startswith(TOOL_FAILURE_PREFIX):
        reason = output[len(TOOL_FAILURE_PREFIX) :].strip().removeprefix("no refund:").strip()
        summary = f"No refund was made: {reason}" if reason else "No refund was made."
    else:  # the user did not approve it (the run service's rejection text)
        summary = "No refund was made: you did not approve it."
    return status_from_facts({"found": False, "order_number": ""}, summary=summary)


def answer_from_tools(ctx: RunContextWrapper[ChatContext], results: list[FunctionToolResult]) -> ToolsToFinalOutputResult:
    """The final answer, built from what the tools returned (see the module docstring)."""
    for result in results:
        output, name = result.output, result.tool.name
        if name == "refund_order":
            if isinstance(output, dict) and output.get("refunded"):
                status = status_from_facts(output, summary=f"{output['message']} {describe(output)}")
            else:
                status = _no_refund(str(output))
            return ToolsToFinalOutputResult(is_final_output=True, final_output=status)
        if name == "lookup_order" and isinstance(output, dict):
            return ToolsToFinalOutputResult(is_final_output=True, final_output=status_from_facts(output))
        if name == "list_orders" and isinstance(output, dict):
            orders = output.get("orders", [])
            if orders:
                listed = "; ".join(f"{o['order_number']} ({o['status']}: {_items(o)})" for o in orders)
                summary = f"Your recent orders: {listed}. Which one would you like to know about?"
            else:
                summary = "There are no orders on your account yet."
            return ToolsToFinalOutputResult(
                is_final_output=True, final_output=status_from_facts({"found": False, "order_number": ""}, summary=summary)
            )
    # A failed lookup ("Tool failed: ..."): the model tells the user.
    return ToolsToFinalOutputResult(is_final_output=False, final_output=None)


agent = Agent[ChatContext](
    name="Order Status",
    instructions=(
        "You help signed-in customers with their orders. Always start by calling a tool:\n"
        "- The user gives an order number and asks about it (status, delivery, carrier, contents): "
        "call `lookup_order` with that number.\n"
        "- The user asks for a refund or their money back: call `refund_order` at once with the "
        "order number and their reason, without looking the order up first. The user approves the "
        "refund in the chat before it happens; never say it is done.\n"
        "- The user gives no order number: call `list_orders`.\n"
        "Never guess a status, date, carrier or refund. If a tool fails, answer with found set to "
        "false, status unknown, and say in the summary that you could not check the order."
    ),
    tools=[lookup_order, list_orders, refund_order],
    # The first step is always a lookup; the SDK resets this after the call.
    model_settings=ModelSettings(tool_choice="required"),
    tool_use_behavior=answer_from_tools,
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
