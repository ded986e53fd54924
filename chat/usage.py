"""Who spent what: the one place usage is summed, for the user's usage page, the conversation
footer, the daily budget, the admin usage report and `manage.py usage_report`.

Usage is summed from the ledger (`accounts.UsageRecord`, one row per run, written with the
run's reply), which outlives deleted or regenerated replies and deleted conversations. Costs
are summed over the runs whose cost is known; runs that used tokens on a model without a price
are counted separately (`unknown_cost`), so a total is shown as "≥ $x, some costs unknown" and
never as if those were free. A run with no tokens (it failed before the model answered) costs
nothing, whatever its model.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from accounts.models import UsageRecord

TOKEN_FIELDS = ("requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")
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

    @property
    def cost_known(self) -> bool:
        return self.unknown_cost == 0

    @property
    def cost_display(self) -> str:
        return format_cost(self.cost, unknown=self.unknown_cost, spent=self.total_tokens)


def format_cost(cost: Decimal | None, *, unknown: int = 0, spent: int = 1) -> str:
    """'$0.0123', '≥ $0.0123, some costs unknown', or 'cost unknown'."""
    from chat.templatetags.chat_tags import usd

    if cost is None or (unknown and not cost and spent):
        return "cost unknown"
    if unknown:
        return f"≥ {usd(cost)}, some costs unknown"
    return usd(cost)


def usage_records(
    *, user=None, since: datetime | None = None, until: datetime | None = None, agent: str | None = None
) -> QuerySet[UsageRecord]:
    """What runs consumed, optionally of one user, agent and period (by the run's start)."""
    records = UsageRecord.objects.all()
    if user is not None:
        records = records.for_user(user)
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    if agent:
        records = records.filter(agent_key=agent)
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


def usage_by(records: QuerySet[UsageRecord], *, by: str, limit: int | None = None) -> list[UsageRow]:
    """One row per user, agent, day, model or conversation, most tokens first (days: newest
    first)."""
    if by not in GROUPINGS:
        raise ValueError(f"Unknown grouping {by!r}; use one of {', '.join(GROUPINGS)}.")
    if by == "user":
        keys = {"key": F("user_id"), "label": F("user__email")}
    elif by == "agent":
        keys = {"key": F("agent_key"), "label": F("agent_key")}
    elif by == "model":
        keys = {"key": F("model"), "label": F("model")}
    elif by == "conversation":
        keys = {"key": F("conversation__public_id"), "label": F("conversation__title")}
    else:
        keys = {"key": TruncDate("created_at"), "label": TruncDate("created_at")}
    grouped = (
        records.order_by()
        .annotate(**{f"group_{name}": expression for name, expression in keys.items()})
        .values(*(f"group_{name}" for name in keys))
        .annotate(**_aggregates())
    )
    grouped = grouped.order_by("-group_key") if by == "day" else grouped.order_by("-u_total_tokens", "group_label")
    if limit:
        grouped = grouped[:limit]
    rows = []
    for values in grouped:
        rows.append(_row(values, key=values["group_key"], label=_label(by, values["group_label"])))
    return rows


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


CSV_COLUMNS = ("label", "runs", *TOKEN_FIELDS, "cost", "unknown_cost")


def to_csv(rows: Iterable[UsageRow], *, by: str, total: UsageRow | None = None) -> str:
    """CSV with one line per row (and a final "Total" line). `cost` is the known part; a
    non-zero `unknown_cost` means it is a lower bound."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([by if name == "label" else name for name in CSV_COLUMNS])
    for row in [*rows, *([total] if total is not None else [])]:
        writer.writerow([_csv_value(getattr(row, name)) for name in CSV_COLUMNS])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    return value
