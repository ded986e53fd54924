from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from factory.django import DjangoModelFactory

from agents_app.models import SpanRecord, TraceRecord
from chat.models import Conversation, Message, Run
from usage.models import TOKEN_FIELDS, UsageRecord

User = get_user_model()


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class ConversationFactory(DjangoModelFactory[Conversation]):
    class Meta:
        model = Conversation

    owner = factory.SubFactory(UserFactory)
    agent_key = "assistant"
    current_agent_name = "Assistant"


class MessageFactory(DjangoModelFactory[Message]):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = "hello"


class RunFactory(DjangoModelFactory[Run]):
    class Meta:
        model = Run

    conversation = factory.SubFactory(ConversationFactory)
    agent_name = "Assistant"
    status = Run.Status.COMPLETED
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyFunction(timezone.now)


class ReplyFactory(MessageFactory):
    """A finished assistant reply with the usage a run stores (gpt-4.1-mini prices)."""

    role = Message.Role.ASSISTANT
    content = "Hello there."
    agent_name = "Assistant"
    status = Message.Status.COMPLETED
    model = "gpt-4.1-mini"
    requests = 1
    input_tokens = 42
    output_tokens = 7
    total_tokens = 49
    cost = Decimal("0.00002800")


class TraceRecordFactory(DjangoModelFactory[TraceRecord]):
    class Meta:
        model = TraceRecord

    trace_id = factory.Sequence(lambda n: f"trace_{n:032d}")
    workflow_name = "chat.assistant"
    agent_key = "assistant"
    started_at = factory.LazyFunction(timezone.now)
    ended_at = factory.LazyFunction(timezone.now)


class SpanRecordFactory(DjangoModelFactory[SpanRecord]):
    class Meta:
        model = SpanRecord

    trace = factory.SubFactory(TraceRecordFactory)
    span_id = factory.Sequence(lambda n: f"span_{n:024d}")
    kind = "function"
    name = "get_current_time"
    started_at = factory.LazyFunction(timezone.now)
    ended_at = factory.LazyFunction(timezone.now)
    duration_ms = 3
    data = factory.LazyFunction(lambda: {"type": "function", "input": "{}", "output": "12:00 (UTC)"})


def ledger_row(*, run: Run, reply: Message) -> UsageRecord:
    """The usage ledger's row for a run, holding exactly the reply's counts and cost, as the
    run service writes it (`usage.services.usage_record_store`)."""
    record, _ = UsageRecord.objects.update_or_create(
        run=run,
        defaults={
            "user_id": run.conversation.owner_id,
            "conversation_id": run.conversation_id,
            "agent_key": run.conversation.agent_key,
            "model": reply.model,
            "cost": reply.cost,
            "created_at": reply.created_at,
            **{name: getattr(reply, name) for name in TOKEN_FIELDS},
        },
    )
    return record


def finished_reply(*, conversation=None, owner=None, age: timedelta | None = None, **fields) -> Message:
    """A finished run's reply with its usage, stored the way the run service stores it: the run,
    the reply and its row in the usage ledger. `age` moves the run's start into the past."""
    conversation = conversation or ConversationFactory(**({"owner": owner} if owner else {}))
    run = RunFactory(conversation=conversation)
    reply = ReplyFactory(conversation=conversation, run=run, **fields)
    if age is not None:
        when = timezone.now() - age
        Message.objects.filter(pk=reply.pk).update(created_at=when)
        Run.objects.filter(pk=run.pk).update(created_at=when)
        reply.refresh_from_db()
    ledger_row(run=run, reply=reply)
    return reply
