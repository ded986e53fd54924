"""Who spent what: the one place usage is summed, for the user's usage page, the conversation
list and footer, the daily budget, the admin report and `manage.py usage_report`.

Everything is summed from the ledger (`UsageRecord`, one row per run), which outlives deleted
or regenerated replies and deleted conversations. Costs are summed over the runs whose cost is
known; runs that used tokens on a model without a price are counted separately
(`unknown_cost`), so a total reads "≥ $x, some costs unknown" and never as if those were free.
A run with no tokens (it failed before the model answered) costs nothing, whatever its model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from usage.formatting import format_cost
from usage.models import TOKEN_FIELDS, UsageRecord

GROUPINGS = ("user", "agent", "day", "model", "conversation")


@dataclass
class UsageRow:
    key: Any = None
    label: str = "Total"
    runs: int = 0
    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)  # the known part
    unknown_cost: int = 0  # runs with tokens but no price
    # Columns other apps add to the report (`usage.columns`), by name: e.g. thumbs_up.
    extra: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def cost_known(self) -> bool:
        return self.unknown_cost == 0

    @property
    def cost_display(self) -> str:
        return format_cost(self.cost, unknown=self.unknown_cost, spent=self.total_tokens)


def usage_records(
    *,
    user=None,
    since: datetime | None = None,
    until: datetime | None = None,
    agent: str | None = None,
    conversation_ids=None,
) -> QuerySet[UsageRecord]:
    """What runs consumed, optionally of one user, agent, period (by the run's start) and set
    of conversations (database ids)."""
    records = UsageRecord.objects.all()
    if user is not None:
        records = records.for_user(user)
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    if agent:
        records = records.filter(agent_key=agent)
    if conversation_ids is not None:
        records = records.filter(conversation_id__in=conversation_ids)
    return records


# Aggregates are named "u_<field>": an annotation may not reuse a model field's name.
def _aggregates() -> dict[str, Any]:
    return {
        "u_runs": Count("id"),
        **{f"u_{name}": Sum(name) for name in TOKEN_FIELDS},
        "u_cost": Sum("cost"),
        "u_unknown_cost": Count("id", filter=Q(cost__isnull=True, total_tokens__gt=0)),
    }


def _row(values: dict[str, Any], *, key: Any = None, label: str = "Total") -> UsageRow:
    row = UsageRow(key=key, label=label)
    for field in fields(UsageRow):
        value = values.get(f"u_{field.name}")
        if value is not None:
            setattr(row, field.name, value)
    return row


def usage_totals(records: QuerySet[UsageRecord]) -> UsageRow:
    return _row(records.aggregate(**_aggregates()))


def group_key(by: str, *, through: str = "") -> Any:
    """The expression of a report row's key for grouping `by`, on the ledger, or on a model
    that reaches a ledger row through the lookup path `through` (`usage.columns`)."""
    if by not in GROUPINGS:
        raise ValueError(f"Unknown grouping {by!r}; use one of {', '.join(GROUPINGS)}.")
    prefix = f"{through}__" if through else ""
    if by == "day":
        return TruncDate(f"{prefix}created_at")
    path = {"user": "user", "agent": "agent_key", "model": "model", "conversation": "conversation__public_id"}[by]
    return F(prefix + path)


def usage_by(records: QuerySet[UsageRecord], *, by: str, limit: int | None = None) -> list[UsageRow]:
    """One row per user, agent, day, model or conversation, most tokens first (days: newest
    first)."""
    labels = {"user": F("user__email"), "agent": F("agent_key"), "model": F("model"), "conversation": F("conversation__title")}
    keys = {"key": group_key(by), "label": labels.get(by) or TruncDate("created_at")}
    grouped = (
        records.order_by()
        .annotate(**{f"group_{name}": expression for name, expression in keys.items()})
        .values(*(f"group_{name}" for name in keys))
        .annotate(**_aggregates())
    )
    grouped = grouped.order_by("-group_key") if by == "day" else grouped.order_by("-u_total_tokens", "group_label")
    if limit:
        grouped = grouped[:limit]
    return [_row(values, key=values["group_key"], label=_label(by, values["group_label"])) for values in grouped]


def usage_by_conversation(conversation_ids) -> dict[int, UsageRow]:
    """Totals per conversation (by database id) for the given conversations, in one query:
    what the conversation list, the chat page's footer and admin show."""
    grouped = (
        UsageRecord.objects.filter(conversation_id__in=list(conversation_ids))
        .order_by()
        .values("conversation_id")
        .annotate(**_aggregates())
    )
    return {values["conversation_id"]: _row(values, key=values["conversation_id"]) for values in grouped}


def conversation_totals(conversation_id: int) -> UsageRow:
    return usage_by_conversation([conversation_id]).get(conversation_id) or UsageRow(key=conversation_id)


def _label(by: str, value: Any) -> str:
    if by == "day":
        return value.isoformat() if isinstance(value, date) else str(value)
    if by == "model":
        return value or "(no model)"
    if by == "conversation":
        return value or "(deleted or untitled conversation)"
    if by == "user" and not value:
        return "(deleted user)"
    return str(value)
