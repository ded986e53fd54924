"""Writes to the ledger. Called by the run service inside its own transactions: a run reserves
tokens when it starts (so runs in flight count against the daily budget), and settles to its
real usage in the transaction that stores its reply, so a reply and its accounting commit
together or not at all."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from usage.models import TOKEN_FIELDS, TokenCounts, UsageRecord
from usage.pricing import cost_of


def usage_reserve(
    *, run_id: int, user_id: int, conversation_id: int, agent_key: str, created_at: datetime, new_run: bool = False
) -> None:
    """Hold `AGENTS_RUN_TOKEN_RESERVATION` tokens of the user's budget for a run that starts (or
    resumes after an approval) until it settles. A `new_run` has no row yet: one INSERT."""
    reservation = settings.AGENTS_RUN_TOKEN_RESERVATION
    if new_run or not UsageRecord.objects.filter(run_id=run_id).update(reserved_tokens=reservation):
        UsageRecord.objects.create(
            run_id=run_id, user_id=user_id, conversation_id=conversation_id, agent_key=agent_key, created_at=created_at,
            reserved_tokens=reservation,
        )


def usage_release(*, run_id: int) -> None:
    """A run that will use nothing more for now (paused for an approval, dead): free its
    reservation; what it recorded stays."""
    UsageRecord.objects.filter(run_id=run_id).update(reserved_tokens=0)


def usage_record_store(
    *,
    run_id: int,
    user_id: int | None,
    conversation_id: int | None,
    agent_key: str,
    model: str,
    counts: dict[str, int],
    created_at: datetime,
    estimated: bool = False,
) -> UsageRecord:
    """Record (or, for a run resumed after an approval, update) what one run consumed, priced
    now, and release its reservation. One row per run: it outlives the reply, the run and the
    conversation, so deleting or regenerating never gives tokens back. Called inside the
    transaction that stores the run's reply (the row was created when the run started)."""
    fields = {
        "user_id": user_id,
        "conversation_id": conversation_id,
        "agent_key": agent_key,
        "model": model,
        "cost": cost_of(model=model, usage=counts),
        "created_at": created_at,
        "reserved_tokens": 0,
        "estimated": estimated,
        **{name: counts.get(name, 0) for name in TOKEN_FIELDS},
    }
    if not UsageRecord.objects.filter(run_id=run_id).update(**fields):
        return UsageRecord.objects.create(run_id=run_id, **fields)
    return UsageRecord(run_id=run_id, **fields)


def copy_counts(source: TokenCounts, target: TokenCounts) -> None:
    """Copy model, token counts and cost (e.g. from the ledger onto the reply it paid for)."""
    target.model = source.model
    target.cost = source.cost
    for name in TOKEN_FIELDS:
        setattr(target, name, getattr(source, name))
