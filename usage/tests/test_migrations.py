"""The usage ledger's migrations keep every row: the backfill of replies stored before the
ledger existed, and the move of the ledger, prices and budgets into the usage app."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Sum

from chat.tests.factories import ConversationFactory, MessageFactory, ReplyFactory, RunFactory, UserFactory
from usage.models import ModelPrice, TokenBudget, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("accounts", "0003_api_tokens"), ("agents_app", "0004_order_refunds"), ("usage", None)]


def migrate(targets):
    """Migrate to `targets`; returns the historical models at that state."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    applied = [target for target in targets if target[1] is not None]
    return MigrationExecutor(connection).loader.project_state(applied).apps


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def back_to_latest():
    # Whatever a test migrates to, the next test needs the latest schema.
    yield
    migrate_to_latest()


def test_replies_stored_before_the_ledger_are_backfilled_once_each(back_to_latest):
    conversation = ConversationFactory(agent_key="tutor")
    run = RunFactory(conversation=conversation)
    with_run = ReplyFactory(conversation=conversation, run=run, total_tokens=77, cost=None, model="mystery")
    without_run = ReplyFactory(conversation=conversation, run=None, total_tokens=5)  # its run was deleted
    MessageFactory(conversation=conversation)  # the user's message uses no tokens

    migrate([("accounts", "0001_profile")])
    historical = migrate([("accounts", "0002_usage_record")])
    records = list(historical.get_model("accounts", "UsageRecord").objects.order_by("pk"))

    assert [(r.run_id, r.total_tokens, r.cost, r.model) for r in records] == [
        (run.pk, 77, None, "mystery"), (None, 5, without_run.cost, "gpt-4.1-mini"),
    ]
    assert {(r.user_id, r.conversation_id, r.agent_key) for r in records} == {(conversation.owner_id, conversation.pk, "tutor")}
    assert records[0].created_at == with_run.created_at


def _old_rows(apps):
    """Fill the pre-move tables: a ledger with a run, a run-less row and an unknown cost; two
    prices; a user with a budget and one with the default."""
    OldRecord = apps.get_model("accounts", "UsageRecord")
    OldPrice = apps.get_model("agents_app", "ModelPrice")
    Profile = apps.get_model("accounts", "Profile")
    alice, bob = UserFactory(), UserFactory()
    conversation = ConversationFactory(owner=alice)
    run = RunFactory(conversation=conversation)
    OldRecord.objects.create(
        user_id=alice.pk, conversation_id=conversation.pk, run_id=run.pk, agent_key="assistant", model="gpt-4.1-mini",
        requests=2, input_tokens=100, cached_tokens=10, output_tokens=20, total_tokens=120, cost=Decimal("0.00007200"),
    )
    OldRecord.objects.create(user_id=alice.pk, agent_key="tutor", model="mystery", total_tokens=55, cost=None)
    OldRecord.objects.create(user_id=bob.pk, agent_key="orders", model="gpt-4o", total_tokens=9, cost=Decimal("0.5"))
    OldPrice.objects.create(model="my-model", input_per_million=1, output_per_million=2)
    OldPrice.objects.create(model="other", input_per_million="0.5", cached_input_per_million="0.1", output_per_million=3)
    Profile.objects.create(user_id=alice.pk, daily_token_budget=5000)
    Profile.objects.create(user_id=bob.pk, daily_token_budget=None)
    return run


def _ledger(queryset):
    return list(
        queryset.order_by("pk").values_list(
            "pk", "user_id", "conversation_id", "run_id", "agent_key", "model", "requests", "input_tokens",
            "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "cost", "created_at",
        )
    )


def _totals(queryset):
    return queryset.aggregate(rows=Count("pk"), tokens=Sum("total_tokens"), cost=Sum("cost"))


def test_moving_usage_into_its_own_app_keeps_every_row_and_total(back_to_latest):
    old = migrate(BEFORE_THE_MOVE)
    run = _old_rows(old)
    OldRecord = old.get_model("accounts", "UsageRecord")
    ledger_before, totals_before = _ledger(OldRecord.objects), _totals(OldRecord.objects)
    prices_before = list(old.get_model("agents_app", "ModelPrice").objects.order_by("model").values_list("model", "input_per_million", "cached_input_per_million", "output_per_million"))
    budgets_before = set(old.get_model("accounts", "Profile").objects.values_list("user_id", "daily_token_budget"))

    migrate_to_latest()

    assert _ledger(UsageRecord.objects) == ledger_before
    assert _totals(UsageRecord.objects) == totals_before
    assert UsageRecord.objects.get(run=run).total_tokens == 120
    assert list(ModelPrice.objects.order_by("model").values_list("model", "input_per_million", "cached_input_per_million", "output_per_million")) == prices_before
    assert set(TokenBudget.objects.values_list("user_id", "daily_token_budget")) == budgets_before
    # New rows get new ids after the copied ones (the sequence moved past them on Postgres).
    newest = UsageRecord.objects.create(agent_key="assistant", total_tokens=1)
    assert newest.pk > max(row[0] for row in ledger_before)


def test_the_move_can_be_undone_without_losing_rows(back_to_latest):
    old = migrate(BEFORE_THE_MOVE)
    _old_rows(old)
    ledger_before = _ledger(old.get_model("accounts", "UsageRecord").objects)
    migrate_to_latest()

    back = migrate(BEFORE_THE_MOVE)

    assert _ledger(back.get_model("accounts", "UsageRecord").objects) == ledger_before
    assert back.get_model("agents_app", "ModelPrice").objects.count() == 2
    assert set(back.get_model("accounts", "Profile").objects.values_list("daily_token_budget", flat=True)) == {5000, None}
