"""Writes done on behalf of agents' tools."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from agents_app.models import Order, Ticket


class RefundRefused(Exception):
    """A refund that cannot be made; the message is written for the user."""


@transaction.atomic
def ticket_create(*, owner, conversation=None, subject: str, description: str, priority: str = Ticket.Priority.NORMAL) -> Ticket:
    """Open a support ticket for `owner`. Raises `ValidationError` on bad input."""
    ticket = Ticket(
        owner=owner,
        conversation=conversation,
        subject=" ".join(subject.split())[:200],
        description=description.strip(),
        priority=priority,
    )
    ticket.full_clean()
    ticket.save()
    return ticket


@transaction.atomic
def order_refund(*, owner, number: str, reason: str) -> Order:
    """Refund one of `owner`'s orders (another user's number is "not found")."""
    order = Order.objects.for_user(owner).select_for_update().filter(number__iexact=number).first()
    if order is None:
        raise RefundRefused(f"there is no order {number} on this account.")
    if order.refunded_at is not None:
        raise RefundRefused(f"order {order.number} was already refunded on {order.refunded_at:%Y-%m-%d}.")
    order.refunded_at = timezone.now()
    order.refund_reason = reason.strip()[:2000]
    order.save(update_fields=["refunded_at", "refund_reason"])
    return order
