"""Columns that other apps add to the usage report (admin and `manage.py usage_report`).

The report shows facts `usage` does not own, such as the users' thumbs up and down on replies
(`chat.Feedback`). Imports point down (`chat → usage`), so `usage` cannot count them itself:
the app that owns the fact registers a `ReportColumns` from its `AppConfig.ready()`
(`chat.apps`), and the report asks every registered one for its values. Each gets the report's
ledger rows (a `UsageRecord` queryset, already filtered by period, user and agent) and the
grouping, and answers per group key, the key `usage.selectors.group_key` gives (so rows and
extra values always match); `by=None` asks for the total, under the key None."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from usage.models import UsageRecord
from usage.selectors import UsageRow

Values = Callable[[QuerySet[UsageRecord], str | None], dict[Any, dict[str, int]]]


@dataclass(frozen=True)
class ReportColumns:
    columns: tuple[tuple[str, str], ...]  # (name: CSV header and `UsageRow.extra` key, title)
    values: Values


_registered: list[ReportColumns] = []


def register(columns: ReportColumns) -> None:
    if columns not in _registered:  # ready() may run more than once (tests, reloads)
        _registered.append(columns)


def extra_columns() -> list[tuple[str, str]]:
    """(name, title) of every registered column, in registration order."""
    return [column for registered in _registered for column in registered.columns]


def add_extra_values(rows: list[UsageRow], total: UsageRow | None, *, records: QuerySet[UsageRecord], by: str) -> None:
    """Fill `extra` of every row (and the total) from the registered columns: 0 where a
    group has none."""
    for registered in _registered:
        by_key = registered.values(records, by)
        totals = registered.values(records, None).get(None, {}) if total is not None else {}
        for name, _title in registered.columns:
            for row in rows:
                row.extra[name] = by_key.get(row.key, {}).get(name) or 0
            if total is not None:
                total.extra[name] = totals.get(name) or 0
