"""Retention of runs and traces with `cleanup_sessions`: old records go, conversations,
messages and their usage stay intact."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents_app.models import SpanRecord, TraceRecord
from chat.models import Message, Run
from chat.tests.factories import (
    ConversationFactory,
    ReplyFactory,
    RunFactory,
    SpanRecordFactory,
    TraceRecordFactory,
    ledger_row,
)
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def cleanup(*args: str) -> str:
    out = StringIO()
    call_command("cleanup_sessions", *args, stdout=out, verbosity=2)
    return out.getvalue()


def run_finished(conversation, *, days_ago: float, status=Run.Status.COMPLETED) -> Run:
    when = timezone.now() - timedelta(days=days_ago)
    run = RunFactory(conversation=conversation, status=status, finished_at=when)
    Run.objects.filter(pk=run.pk).update(created_at=when)
    ledger_row(run=run, reply=ReplyFactory(conversation=conversation, run=run))
    return run


def test_old_finished_runs_go_but_messages_keep_their_usage():
    conversation = ConversationFactory()
    old = run_finished(conversation, days_ago=120)
    older_failed = run_finished(conversation, days_ago=130, status=Run.Status.FAILED)
    recent = run_finished(conversation, days_ago=1)
    tokens_before = sum(Message.objects.values_list("total_tokens", flat=True))

    output = cleanup("--runs-older-than", "90d")

    assert "Removed 2 finished run(s)" in output and str(old.public_id) in output
    assert set(Run.objects.values_list("pk", flat=True)) == {recent.pk}
    assert not Run.objects.filter(pk__in=[old.pk, older_failed.pk]).exists()
    assert Message.objects.filter(conversation=conversation).count() == 3  # every reply stays
    assert sum(Message.objects.values_list("total_tokens", flat=True)) == tokens_before
    assert Message.objects.filter(run__isnull=True).count() == 2
    assert UsageRecord.objects.count() == 3 and sum(UsageRecord.objects.values_list("total_tokens", flat=True)) == tokens_before


def test_each_conversations_latest_run_and_active_runs_are_kept():
    idle = ConversationFactory()
    only_run = run_finished(idle, days_ago=200)  # edit/regenerate of the last reply needs it
    busy = ConversationFactory()
    waiting = RunFactory(conversation=busy, status=Run.Status.AWAITING_APPROVAL, finished_at=None)
    Run.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(days=200))
    earlier = run_finished(busy, days_ago=300)

    cleanup("--runs-older-than", "30d")

    assert Run.objects.filter(pk=only_run.pk).exists()
    assert Run.objects.filter(pk=waiting.pk).exists()
    assert not Run.objects.filter(pk=earlier.pk).exists()


def test_old_traces_go_with_their_spans_and_runs_lose_only_the_link():
    conversation = ConversationFactory()
    run = run_finished(conversation, days_ago=1)
    old = TraceRecordFactory(run=run, started_at=timezone.now() - timedelta(days=20))
    SpanRecordFactory.create_batch(3, trace=old)
    fresh = TraceRecordFactory(run=run)
    SpanRecordFactory(trace=fresh)

    output = cleanup("--traces-older-than", "14d")

    assert "Removed 1 trace(s) (3 span(s))" in output and old.trace_id in output
    assert list(TraceRecord.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert SpanRecord.objects.count() == 1
    assert Run.objects.filter(pk=run.pk).exists()


def test_dry_run_counts_runs_and_traces_and_removes_nothing():
    conversation = ConversationFactory()
    run_finished(conversation, days_ago=100)
    run_finished(conversation, days_ago=1)
    TraceRecordFactory(started_at=timezone.now() - timedelta(days=30))

    output = cleanup("--runs-older-than", "90d", "--traces-older-than", "14d", "--dry-run")

    assert "Would remove 1 finished run(s)" in output and "Would remove 1 trace(s) (0 span(s))" in output
    assert Run.objects.count() == 2 and TraceRecord.objects.count() == 1


def test_retention_can_be_limited_to_one_user(user, other_user):
    mine, theirs = ConversationFactory(owner=user), ConversationFactory(owner=other_user)
    for conversation in (mine, theirs):
        run_finished(conversation, days_ago=100)
        run_finished(conversation, days_ago=1)
    TraceRecordFactory(user=user, started_at=timezone.now() - timedelta(days=30))
    TraceRecordFactory(user=other_user, started_at=timezone.now() - timedelta(days=30))

    cleanup("--runs-older-than", "90d", "--traces-older-than", "14d", "--user", user.email)

    assert Run.objects.filter(conversation=mine).count() == 1 and Run.objects.filter(conversation=theirs).count() == 2
    assert list(TraceRecord.objects.values_list("user", flat=True)) == [other_user.pk]


def test_something_to_remove_must_be_named():
    with pytest.raises(CommandError, match="Say what to remove"):
        call_command("cleanup_sessions")
    with pytest.raises(CommandError, match="--conversations needs --older-than"):
        call_command("cleanup_sessions", "--conversations", "--runs-older-than", "1d")
    with pytest.raises(CommandError, match="not a duration"):
        call_command("cleanup_sessions", "--traces-older-than", "soon")
