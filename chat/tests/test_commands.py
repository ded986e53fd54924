from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents_app.models import AgentSession, SessionItem, SpanRecord, TraceRecord
from agents_app.session import DjangoSession
from chat.models import Conversation, Message, Run
from chat.tests.factories import ConversationFactory, MessageFactory, SpanRecordFactory, TraceRecordFactory

pytestmark = pytest.mark.django_db


def conversation_with_history(*, age: timedelta, owner=None) -> Conversation:
    conversation = ConversationFactory(**({"owner": owner} if owner else {}))
    MessageFactory(conversation=conversation)
    async_to_sync(DjangoSession(conversation.session_id).add_items)(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    )
    past = timezone.now() - age
    AgentSession.objects.filter(session_id=conversation.session_id).update(updated_at=past)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=past)
    return conversation


def run_cleanup(*args: str) -> str:
    out = StringIO()
    call_command("cleanup_sessions", *args, stdout=out, verbosity=2)
    return out.getvalue()


def test_dry_run_reports_old_sessions_and_removes_nothing():
    old = conversation_with_history(age=timedelta(days=40))
    conversation_with_history(age=timedelta(days=2))

    output = run_cleanup("--older-than", "30d", "--dry-run")

    assert "Would remove SDK history of 1 session(s) (2 item(s))" in output
    assert old.session_id in output
    assert SessionItem.objects.count() == 4


def test_cleanup_removes_only_inactive_history_and_keeps_messages():
    old = conversation_with_history(age=timedelta(days=40))
    recent = conversation_with_history(age=timedelta(hours=2))

    output = run_cleanup("--older-than", "30d")

    assert "Removed SDK history of 1 session(s) (2 item(s))" in output
    assert not AgentSession.objects.filter(session_id=old.session_id).exists()
    assert AgentSession.objects.filter(session_id=recent.session_id).exists()
    assert Message.objects.filter(conversation=old).exists()  # visible conversation stays


def test_hours_threshold_and_user_filter(user, other_user):
    mine = conversation_with_history(age=timedelta(hours=13), owner=user)
    theirs = conversation_with_history(age=timedelta(hours=13), owner=other_user)

    run_cleanup("--older-than", "12h", "--user", user.email)

    assert not AgentSession.objects.filter(session_id=mine.session_id).exists()
    assert AgentSession.objects.filter(session_id=theirs.session_id).exists()


def test_conversations_flag_deletes_whole_old_conversations_but_not_running_ones():
    old = conversation_with_history(age=timedelta(days=40))
    busy = conversation_with_history(age=timedelta(days=40))
    Run.objects.create(conversation=busy, status=Run.Status.RUNNING)

    output = run_cleanup("--older-than", "30d", "--conversations")

    assert "and 1 conversation(s)" in output
    assert not Conversation.objects.filter(pk=old.pk).exists()
    assert Conversation.objects.filter(pk=busy.pk).exists()
    assert AgentSession.objects.filter(session_id=busy.session_id).exists()


def test_deleting_old_conversations_deletes_their_traces_too():
    old = conversation_with_history(age=timedelta(days=40))
    recent = conversation_with_history(age=timedelta(days=2))
    SpanRecordFactory(trace=TraceRecordFactory(group_id=str(old.public_id)))
    kept = SpanRecordFactory(trace=TraceRecordFactory(group_id=str(recent.public_id)))

    run_cleanup("--older-than", "30d", "--conversations")

    assert list(TraceRecord.objects.values_list("pk", flat=True)) == [kept.trace_id]
    assert list(SpanRecord.objects.values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.parametrize("value", ["30", "0d", "abc", "1y", "-1d"])
def test_bad_durations_are_refused_clearly(value):
    with pytest.raises(CommandError, match="not a duration"):
        call_command("cleanup_sessions", f"--older-than={value}")


def test_unknown_user_is_refused():
    with pytest.raises(CommandError, match="No user"):
        call_command("cleanup_sessions", "--older-than", "1d", "--user", "ghost@example.com")


def test_recover_runs_interrupts_dead_runs_and_frees_the_conversation(settings):
    conversation = ConversationFactory()
    session = DjangoSession(conversation.session_id)
    async_to_sync(session.add_items)([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}])
    mark = async_to_sync(session.last_item_id)()
    async_to_sync(session.add_items)([{"role": "user", "content": "question the dead process got"}])
    dead = Run.objects.create(
        conversation=conversation,
        status=Run.Status.RUNNING,
        history_mark=mark,
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5),
    )
    reply = Message.objects.create(
        conversation=conversation, run=dead, role="assistant", status="streaming", content="partial answ"
    )
    alive = Run.objects.create(conversation=ConversationFactory(), status=Run.Status.RUNNING)

    out = StringIO()
    call_command("recover_runs", stdout=out)

    assert "Released 1 run(s)" in out.getvalue()
    dead.refresh_from_db()
    reply.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == Run.Status.INTERRUPTED and alive.status == Run.Status.RUNNING
    assert reply.status == Message.Status.FAILED and reply.content == "partial answ" and reply.error
    items = async_to_sync(session.get_items)()
    assert items[-1]["role"] == "assistant" and items[-1]["content"].startswith("partial answ")
    from agents_app.history import problems

    assert problems(items) == []
