"""Staff review in Django admin: conversations, messages, runs, traces (with their timeline),
prices and the usage report load for staff, are refused to everyone else, and stay read-only
where editing would break history."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Message, Run
from chat.tests.factories import (
    ConversationFactory,
    MessageFactory,
    ReplyFactory,
    RunFactory,
    SpanRecordFactory,
    TraceRecordFactory,
    UserFactory,
    finished_reply,
    ledger_row,
)
from usage.models import ModelPrice, TokenBudget

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    admin_user = UserFactory(username="boss", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    return client


@pytest.fixture
def history(user):
    """One conversation with a finished run, its messages, events and trace."""
    conversation = ConversationFactory(owner=user, title="Weather chat")
    run = RunFactory(
        conversation=conversation,
        request_id="req-42",
        events=[
            {"seq": 1, "type": "message.created", "content": "Is it sunny?"},
            {"seq": 2, "type": "tool.called", "call_id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}},
            {"seq": 3, "type": "run.finished", "status": "completed", "error": ""},
        ],
    )
    MessageFactory(conversation=conversation, run=run, content="Is it sunny?")
    reply = ReplyFactory(conversation=conversation, run=run, content="Sunny in Oslo.")
    ledger_row(run=run, reply=reply)
    start = timezone.now()
    trace = TraceRecordFactory(
        run=run, user=user, group_id=str(conversation.public_id), metadata={"request_id": "req-42"}, started_at=start
    )
    agent = SpanRecordFactory(
        trace=trace, kind="agent", name="Assistant", started_at=start, ended_at=start + timedelta(milliseconds=900),
        duration_ms=900, data={"type": "agent", "name": "Assistant", "tools": ["get_weather"]},
    )
    SpanRecordFactory(
        trace=trace, parent_id=agent.span_id, kind="function", name="get_weather",
        started_at=start + timedelta(milliseconds=100), ended_at=start + timedelta(milliseconds=350), duration_ms=250,
        data={"type": "function", "input": '{"city": "Oslo"}', "output": "sunny, 21°C"},
        error={"message": "Slow tool", "data": {"seconds": 0.25}},
    )
    return {"conversation": conversation, "run": run, "reply": reply, "trace": trace}


def review_urls(history) -> list[str]:
    conversation, run, reply, trace = history["conversation"], history["run"], history["reply"], history["trace"]
    span = trace.spans.first()
    price = ModelPrice.objects.create(model="my-model", input_per_million=1, output_per_million=2)
    return [
        reverse("admin:chat_conversation_changelist"),
        reverse("admin:chat_conversation_change", args=[conversation.pk]),
        reverse("admin:chat_message_changelist"),
        reverse("admin:chat_message_change", args=[reply.pk]),
        reverse("admin:chat_run_changelist"),
        reverse("admin:chat_run_change", args=[run.pk]),
        reverse("admin:agents_app_tracerecord_changelist"),
        reverse("admin:agents_app_tracerecord_change", args=[trace.pk]),
        reverse("admin:agents_app_tracerecord_timeline", args=[trace.pk]),
        reverse("admin:agents_app_spanrecord_changelist"),
        reverse("admin:agents_app_spanrecord_change", args=[span.pk]),
        reverse("admin:usage_modelprice_changelist"),
        reverse("admin:usage_modelprice_change", args=[price.pk]),
        reverse("admin:usage_report"),
        reverse("admin:usage_report") + "?since=7d&by=day&format=csv",
        reverse("admin:auth_user_change", args=[conversation.owner.pk]),
        reverse("admin:usage_usagerecord_changelist"),
        reverse("admin:usage_usagerecord_change", args=[run.usage_record.pk]),
    ]


def test_every_review_page_loads_for_staff(staff, history):
    for url in review_urls(history):
        response = staff.get(url)
        assert response.status_code == 200, url


def test_review_pages_send_non_staff_to_the_admin_login(client, user, history):
    client.force_login(user)
    for url in review_urls(history):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url


def test_staff_without_the_right_to_see_messages_cannot_see_the_usage_report(client, history):
    clerk = UserFactory(is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_modelprice"))
    client.force_login(clerk)

    assert client.get(reverse("admin:usage_modelprice_changelist")).status_code == 200
    assert client.get(reverse("admin:usage_report")).status_code == 403
    assert client.get(reverse("admin:agents_app_tracerecord_timeline", args=[history["trace"].pk])).status_code == 403


def test_run_page_shows_its_events_errors_and_links_to_the_trace_timeline(staff, history):
    page = staff.get(reverse("admin:chat_run_change", args=[history["run"].pk])).content.decode()

    assert "get_weather" in page and "Oslo" in page and "run.finished" in page
    assert reverse("admin:agents_app_tracerecord_timeline", args=[history["trace"].pk]) in page
    assert "req-42" in page


def test_trace_timeline_shows_nested_spans_with_durations_inputs_outputs_and_errors(staff, history):
    response = staff.get(reverse("admin:agents_app_tracerecord_timeline", args=[history["trace"].pk]))
    rows = response.context["rows"]

    assert [(row["span"].name, row["depth"]) for row in rows] == [("Assistant", 0), ("get_weather", 1)]
    tool = rows[1]
    assert tool["offset_ms"] == 100 and tool["span"].duration_ms == 250
    assert tool["left"] == pytest.approx(100 * 100 / 900, abs=0.01) and tool["width"] == pytest.approx(100 * 250 / 900, abs=0.01)
    assert '"city": "Oslo"' in tool["input"] and tool["output"] == "sunny, 21°C"
    page = response.content.decode()
    assert "250 ms" in page and "sunny, 21°C" in page and "Slow tool" in page
    assert reverse("admin:chat_run_change", args=[history["run"].pk]) in page


def test_conversation_list_filters_by_last_run_status_and_reply_status(staff, user, history):
    failed = ConversationFactory(owner=user, title="Broken chat")
    RunFactory(conversation=failed, status=Run.Status.COMPLETED, created_at=timezone.now())
    failed_run = RunFactory(conversation=failed, status=Run.Status.FAILED)
    ledger_row(run=failed_run, reply=ReplyFactory(conversation=failed, run=failed_run, status=Message.Status.FAILED))
    url = reverse("admin:chat_conversation_changelist")

    def titles(query: str) -> set[str]:
        return {c.title for c in staff.get(url + query).context["cl"].result_list}

    assert titles("?last_run=failed") == {"Broken chat"}
    assert titles("?last_run=completed") == {"Weather chat"}
    assert titles("?reply_status=failed") == {"Broken chat"}
    assert titles(f"?owner__id__exact={user.pk}&q=Oslo") == {"Weather chat"}


def test_conversation_totals_survive_a_message_search_and_show_unknown_costs(staff, history):
    finished_reply(conversation=history["conversation"], content="Also sunny in Oslo", model="mystery", cost=None, total_tokens=10)
    response = staff.get(reverse("admin:chat_conversation_changelist") + "?q=Oslo")

    (row,) = response.context["cl"].result_list
    assert row.tokens_sum == 59  # not multiplied by the searched messages
    assert "some costs unknown" in response.content.decode()


def test_history_cannot_be_edited_in_admin(staff, history):
    conversation = history["conversation"]
    response = staff.post(
        reverse("admin:chat_conversation_change", args=[conversation.pk]),
        {"title": "Renamed", "owner": UserFactory().pk, "agent_key": "tutor", "messages-TOTAL_FORMS": "0",
         "messages-INITIAL_FORMS": "0"},
    )
    conversation.refresh_from_db()
    assert response.status_code in (200, 302)
    assert conversation.agent_key == "assistant" and conversation.owner == history["run"].conversation.owner
    assert staff.post(reverse("admin:chat_message_change", args=[history["reply"].pk]), {"content": "x"}).status_code == 403
    assert staff.post(reverse("admin:chat_run_change", args=[history["run"].pk]), {"status": "failed"}).status_code == 403
    assert staff.get(reverse("admin:agents_app_tracerecord_add")).status_code == 403
    ledger = history["run"].usage_record
    assert staff.post(reverse("admin:usage_usagerecord_delete", args=[ledger.pk]), {"post": "yes"}).status_code == 403


def test_deleting_a_conversation_in_admin_also_removes_its_sdk_history(staff, history):
    from asgiref.sync import async_to_sync

    from agents_app.models import AgentSession
    from agents_app.session import DjangoSession

    conversation = history["conversation"]
    async_to_sync(DjangoSession(conversation.session_id).add_items)([{"role": "user", "content": "hi"}])
    staff.post(reverse("admin:chat_conversation_delete", args=[conversation.pk]), {"post": "yes"})

    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not AgentSession.objects.filter(session_id=conversation.session_id).exists()


def test_usage_report_groups_totals_and_exports_csv(staff, user, other_user):
    finished_reply(owner=user)
    finished_reply(conversation=ConversationFactory(owner=other_user, agent_key="tutor"), total_tokens=1000, cost=Decimal("0.001"))
    finished_reply(owner=other_user, model="mystery", cost=None, total_tokens=10)
    finished_reply(owner=user, total_tokens=7777, age=timedelta(days=10))
    url = reverse("admin:usage_report")

    response = staff.get(url, {"since": "7d", "by": "user"})
    rows = {row.label: row for row in response.context["rows"]}
    assert rows[user.email].total_tokens == 49 and rows[other_user.email].total_tokens == 1010
    assert rows[other_user.email].unknown_cost == 1
    assert response.context["total"].total_tokens == 1059
    assert "≥ $0.001028, some costs unknown" in response.content.decode()

    by_agent = {row.key: row.total_tokens for row in staff.get(url, {"since": "7d", "by": "agent"}).context["rows"]}
    assert by_agent == {"assistant": 59, "tutor": 1000}
    assert staff.get(url, {"since": "30d", "by": "user", "user": user.email}).context["total"].total_tokens == 49 + 7777

    exported = staff.get(url, {"since": "7d", "by": "user", "format": "csv"})
    assert exported["Content-Type"].startswith("text/csv") and "attachment" in exported["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert lines[-1]["user"] == "Total" and lines[-1]["total_tokens"] == "1059" and lines[-1]["unknown_cost"] == "1"


def test_usage_report_explains_a_bad_period(staff):
    response = staff.get(reverse("admin:usage_report"), {"since": "forever", "by": "user"})
    assert response.status_code == 200 and "not a duration" in response.content.decode()
    assert staff.get(reverse("admin:usage_report"), {"since": "x", "format": "csv"}).status_code == 400


def test_user_admin_edits_the_daily_token_budget_inline(staff, user):
    url = reverse("admin:auth_user_change", args=[user.pk])
    form = staff.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update({
        "username": user.username, "email": user.email, "date_joined_0": "2026-01-01", "date_joined_1": "10:00:00",
        "token_budget-TOTAL_FORMS": "1", "token_budget-INITIAL_FORMS": "0", "token_budget-MIN_NUM_FORMS": "0",
        "token_budget-MAX_NUM_FORMS": "1", "token_budget-0-daily_token_budget": "5000",
    })
    data.pop("last_login", None)
    data.pop("groups", None)
    data.pop("user_permissions", None)

    response = staff.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    assert TokenBudget.objects.get(user=user).daily_token_budget == 5000


def test_conversation_page_links_to_its_traces(staff, history):
    conversation = history["conversation"]
    page = staff.get(reverse("admin:chat_conversation_change", args=[conversation.pk])).content.decode()
    link = reverse("admin:agents_app_tracerecord_changelist") + f"?group_id={conversation.public_id}"
    assert link in page

    listed = staff.get(link).context["cl"].result_list
    assert [trace.pk for trace in listed] == [history["trace"].pk]


def test_traces_can_be_found_by_span_name_with_their_span_count(staff, history):
    TraceRecordFactory(workflow_name="chat.other")
    response = staff.get(reverse("admin:agents_app_tracerecord_changelist"), {"q": "get_weather"})

    (trace,) = response.context["cl"].result_list
    assert trace.pk == history["trace"].pk and trace.span_total == 2
