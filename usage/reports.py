"""Usage rows as CSV, for the admin report and `manage.py usage_report --csv`.

Written with `defusedcsv`: a cell a spreadsheet would evaluate as a formula (starting with `=`,
`+`, `-`, `@`, `|` or `%`, such as an account `=1+2@example.com`) gets a leading `'`; numbers,
negative ones included, are written as they are."""

from __future__ import annotations

import io
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from defusedcsv import csv

from usage.columns import extra_columns
from usage.models import TOKEN_FIELDS
from usage.selectors import UsageRow

CSV_COLUMNS = ("label", "runs", *TOKEN_FIELDS, "cost", "unknown_cost")


def to_csv(rows: Iterable[UsageRow], *, by: str, total: UsageRow | None = None) -> str:
    """CSV with one line per row (and a final "Total" line). `cost` is the known part; a
    non-zero `unknown_cost` means it is a lower bound. Columns other apps add to the report
    (`usage.columns`: thumbs up/down) follow."""
    out = io.StringIO()
    writer = csv.writer(out)
    extra = [name for name, _title in extra_columns()]
    writer.writerow([by if name == "label" else name for name in CSV_COLUMNS] + extra)
    for row in [*rows, *([total] if total is not None else [])]:
        writer.writerow([_csv_value(getattr(row, name)) for name in CSV_COLUMNS] + [row.extra.get(name, 0) for name in extra])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    return value
