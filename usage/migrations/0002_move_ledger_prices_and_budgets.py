"""Move the usage ledger (from accounts), model prices (from agents_app) and per-user budgets
(from accounts.Profile) into this app, row for row and with the same primary keys, so nothing
that points at a row changes. Reversible: going back copies the rows home again."""

from django.core.management.color import no_style
from django.db import migrations

LEDGER_FIELDS = (
    "id", "user_id", "conversation_id", "run_id", "agent_key", "model", "requests", "input_tokens",
    "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "cost", "created_at",
)
PRICE_FIELDS = ("id", "model", "input_per_million", "cached_input_per_million", "output_per_million", "updated_at")
BATCH = 2000


def _copy(source, target, names, schema_editor, *, transform=None):
    """Copy every row of `source` into `target` (same ids), in batches."""
    batch = []
    for values in source.objects.order_by("pk").values(*names).iterator(chunk_size=BATCH):
        batch.append(target(**(transform(values) if transform else values)))
        if len(batch) >= BATCH:
            target.objects.bulk_create(batch)
            batch = []
    target.objects.bulk_create(batch)
    # Rows were inserted with explicit ids: move the id sequence past them (Postgres).
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [target]):
            cursor.execute(sql)


def _budget(values):
    # A profile held only the budget; its id means nothing elsewhere.
    return {"user_id": values["user_id"], "daily_token_budget": values["daily_token_budget"]}


def forward(apps, schema_editor):
    _copy(apps.get_model("accounts", "UsageRecord"), apps.get_model("usage", "UsageRecord"), LEDGER_FIELDS, schema_editor)
    _copy(apps.get_model("agents_app", "ModelPrice"), apps.get_model("usage", "ModelPrice"), PRICE_FIELDS, schema_editor)
    _copy(
        apps.get_model("accounts", "Profile"),
        apps.get_model("usage", "TokenBudget"),
        ("user_id", "daily_token_budget"),
        schema_editor,
        transform=_budget,
    )


def backward(apps, schema_editor):
    _copy(apps.get_model("usage", "UsageRecord"), apps.get_model("accounts", "UsageRecord"), LEDGER_FIELDS, schema_editor)
    _copy(apps.get_model("usage", "ModelPrice"), apps.get_model("agents_app", "ModelPrice"), PRICE_FIELDS, schema_editor)
    _copy(
        apps.get_model("usage", "TokenBudget"),
        apps.get_model("accounts", "Profile"),
        ("user_id", "daily_token_budget"),
        schema_editor,
        transform=_budget,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0001_initial"),
        ("accounts", "0003_api_tokens"),
        ("agents_app", "0004_order_refunds"),
    ]

    operations = [migrations.RunPython(forward, backward)]
