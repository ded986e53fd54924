"""CSV exports cannot carry a formula into a spreadsheet: a cell a spreadsheet would evaluate
(starting with `=`, `+`, `-`, `@`, `|` or `%`) is written with a leading `'`, on every CSV the
app writes (`usage.reports.to_csv`: `manage.py usage_report --csv` and the admin report)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from chat.tests.factories import UserFactory, finished_reply
from usage.reports import to_csv
from usage.selectors import UsageRow

pytestmark = pytest.mark.django_db

HOSTILE_ACCOUNTS = ["=1+2@example.com", "+cmd@example.com", "-2+3@example.com", "@SUM(A1)@example.com"]


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_usage_report_csv_neutralises_accounts_that_look_like_formulas():
    for email in HOSTILE_ACCOUNTS:
        finished_reply(owner=UserFactory(username=email.split("@")[0] + "x", email=email))
    out = io.StringIO()
    call_command("usage_report", "--since", "1d", "--by", "user", "--csv", stdout=out)

    users = {row["user"] for row in csv.DictReader(io.StringIO(out.getvalue()))}
    assert users == {"'" + email for email in HOSTILE_ACCOUNTS} | {"Total"}
    assert not [cell for cell in _cells(out.getvalue()) if cell[:1] in "=+-@"]


def test_admin_usage_report_csv_neutralises_them_too():
    finished_reply(owner=UserFactory(username="formula", email="=HYPERLINK(1)@example.com"))
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    exported = staff.get(reverse("admin:usage_report"), {"since": "7d", "by": "user", "format": "csv"})

    assert "'=HYPERLINK(1)@example.com" in _cells(exported.content.decode())


def test_numbers_stay_numbers():
    row = UsageRow(label="-42", runs=3, total_tokens=10, cost=Decimal("-0.5"))
    cells = _cells(to_csv([row], by="user"))
    assert cells[len(cells) // 2 :][:2] == ["-42", "3"] and "-0.5" in cells
