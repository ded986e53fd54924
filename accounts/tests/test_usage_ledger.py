"""The usage ledger's migration keeps the history of replies stored before it existed."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import UsageRecord
from chat.tests.factories import ConversationFactory, MessageFactory, ReplyFactory, RunFactory


@pytest.mark.django_db(transaction=True)
def test_replies_stored_before_the_ledger_are_backfilled_once_each():
    conversation = ConversationFactory(agent_key="tutor")
    run = RunFactory(conversation=conversation)
    with_run = ReplyFactory(conversation=conversation, run=run, total_tokens=77, cost=None, model="mystery")
    without_run = ReplyFactory(conversation=conversation, run=None, total_tokens=5)  # its run was deleted
    MessageFactory(conversation=conversation)  # the user's message uses no tokens

    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0001_profile")])
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("accounts", "0002_usage_record")])
        records = list(UsageRecord.objects.order_by("pk"))
    finally:
        # Back to the latest schema: later migrations (0003_api_tokens…) must exist for the next tests.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert [(r.run_id, r.total_tokens, r.cost, r.model) for r in records] == [
        (run.pk, 77, None, "mystery"), (None, 5, without_run.cost, "gpt-4.1-mini"),
    ]
    assert {(r.user_id, r.conversation_id, r.agent_key) for r in records} == {(conversation.owner_id, conversation.pk, "tutor")}
    assert records[0].created_at == with_run.created_at
