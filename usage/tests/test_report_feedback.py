"""The usage report counts the thumbs up and down users gave the replies of the runs it
reports, per row and in total: in admin (table and CSV) and in `manage.py usage_report`.
Feedback belongs to chat; chat adds the columns (`usage.columns`, registered in `chat.apps`)."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from chat.models import Feedback
from chat.tests.factories import ConversationFactory, UserFactory, finished_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated():
    """alice: two assistant replies (up, down) and one unrated; bob: a support reply on
    another model (up); an old reply of alice's (down), outside a 7-day report."""
    alice, bob = UserFactory(email="alice@example.com"), UserFactory(email="bob@example.com")
    chat = ConversationFactory(owner=alice, agent_key="assistant")
    for rating in ("up", "down", None):
        reply = finished_reply(conversation=chat)
        if rating:
            Feedback.objects.create(message=reply, user=alice, rating=rating, comment="")
    support = finished_reply(conversation=ConversationFactory(owner=bob, agent_key="support"), model="gpt-4.1")
    Feedback.objects.create(message=support, user=bob, rating="up")
    old = finished_reply(conversation=chat, age=timedelta(days=10))
    Feedback.objects.create(message=old, user=alice, rating="down")
    return alice, bob


def report_csv(*args: str) -> dict[str, dict[str, str]]:
    out = io.StringIO()
    call_command("usage_report", "--since", "7d", *args, "--csv", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    return {next(iter(row.values())): row for row in rows}


def thumbs(row: dict[str, str]) -> tuple[int, int]:
    return int(row["thumbs_up"]), int(row["thumbs_down"])


def test_usage_report_counts_thumbs_by_user_agent_model_and_day(rated):
    by_user = report_csv("--by", "user")
    assert thumbs(by_user["alice@example.com"]) == (1, 1)
    assert thumbs(by_user["bob@example.com"]) == (1, 0)
    assert thumbs(by_user["Total"]) == (2, 1)  # the 10-day-old thumbs down is outside the period
    assert by_user["alice@example.com"]["runs"] == "3"

    by_agent = report_csv("--by", "agent")
    assert (thumbs(by_agent["assistant"]), thumbs(by_agent["support"])) == ((1, 1), (1, 0))
    by_model = report_csv("--by", "model")
    assert (thumbs(by_model["gpt-4.1-mini"]), thumbs(by_model["gpt-4.1"])) == ((1, 1), (1, 0))
    by_day = report_csv("--by", "day")
    assert [thumbs(row) for label, row in by_day.items() if label != "Total"] == [(2, 1)]

    everything = report_csv("--by", "user", "--since", "30d")
    assert thumbs(everything["alice@example.com"]) == (1, 2)


def test_usage_report_table_shows_the_thumbs_columns(rated):
    out = io.StringIO()
    call_command("usage_report", "--since", "7d", "--by", "agent", stdout=out)
    header, *lines = [line for line in out.getvalue().splitlines()[1:] if not line.startswith("-")]

    assert header.split()[-4:] == ["Thumbs", "up", "Thumbs", "down"]
    assert [line.split()[0] + " " + " ".join(line.split()[-2:]) for line in lines] == ["assistant 1 1", "support 1 0", "Total 2 1"]


def test_admin_usage_report_shows_thumbs_per_row_and_in_total_and_in_its_csv(rated):
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = staff.get(reverse("admin:usage_report"), {"since": "7d", "by": "user"}).content.decode()
    exported = staff.get(reverse("admin:usage_report"), {"since": "7d", "by": "user", "format": "csv"}).content.decode()

    assert '<th class="num" data-column="thumbs_up">Thumbs up</th>' in page
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>.*?data-column=\"thumbs_up\">(\d+)</td>.*?data-column=\"thumbs_down\">(\d+)</td>", page, re.S)
    assert sorted(rows) == [("alice@example.com", "1", "1"), ("bob@example.com", "1", "0")]
    total = re.search(r"<tfoot>.*?data-column=\"thumbs_up\">(\d+)</th>.*?data-column=\"thumbs_down\">(\d+)</th>", page, re.S)
    assert total.groups() == ("2", "1")
    by_label = {row["user"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert thumbs(by_label["alice@example.com"]) == (1, 1) and thumbs(by_label["Total"]) == (2, 1)
