"""Tokens and cost by user, agent, day or model, as a table or CSV.

    python manage.py usage_report --since 7d --by user
    python manage.py usage_report --since 30d --by day --csv > usage.csv

The numbers come from `usage.selectors`, the same selectors as the admin usage report and the
users' usage page. Costs are USD; "≥ $x, some costs unknown" marks totals that include
runs on a model without a price. Deleted conversations and regenerated replies still count.
Columns other apps add (`usage.columns`: the thumbs up and down users gave the replies of
those runs) follow the cost.
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.selectors import user_for_command
from config.durations import parse_duration
from usage.columns import add_extra_values, extra_columns
from usage.reports import to_csv
from usage.selectors import GROUPINGS, usage_by, usage_records, usage_totals

COLUMNS = (
    ("runs", "Runs"),
    ("requests", "Requests"),
    ("input_tokens", "Input"),
    ("cached_tokens", "Cached"),
    ("output_tokens", "Output"),
    ("reasoning_tokens", "Reasoning"),
    ("total_tokens", "Total"),
)


class Command(BaseCommand):
    help = "Report token usage and cost by user, agent, day or model over a period (table or --csv)."

    def add_arguments(self, parser):
        parser.add_argument("--since", default="7d", help="Period to report, e.g. 24h, 7d, 4w (default 7d).")
        parser.add_argument("--by", default="user", choices=GROUPINGS, help="Grouping (default user).")
        parser.add_argument("--user", help="Only this user (email or username).")
        parser.add_argument("--agent", help="Only this agent (its key).")
        parser.add_argument("--csv", action="store_true", help="Write CSV (with a final Total line) instead of a table.")

    def handle(self, *args, since, by, user, agent, csv, **options):
        try:
            start = timezone.now() - parse_duration(since)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        records = usage_records(since=start, user=user_for_command(user) if user else None, agent=agent)
        rows = usage_by(records, by=by)
        total = usage_totals(records)
        add_extra_values(rows, total, records=records, by=by)
        if csv:
            self.stdout.write(to_csv(rows, by=by, total=total), ending="")
            return
        self.stdout.write(f"Usage since {timezone.localtime(start):%Y-%m-%d %H:%M %Z}, by {by}:")
        extra = extra_columns()
        table = [[by.capitalize(), *(title for _, title in COLUMNS), "Cost (USD)", *(title for _, title in extra)]]
        for row in [*rows, total]:
            table.append([
                row.label, *(f"{getattr(row, name):,}" for name, _ in COLUMNS), row.cost_display,
                *(f"{row.extra.get(name, 0):,}" for name, _ in extra),
            ])
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for index, line in enumerate(table):
            if index == len(table) - 1:
                self.stdout.write("  ".join("-" * width for width in widths))
            cells = [line[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))]
            self.stdout.write("  ".join(cells).rstrip())

