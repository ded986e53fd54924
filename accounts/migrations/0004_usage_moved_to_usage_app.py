"""The ledger and the per-user budget now live in the usage app (usage/0002 copied the rows)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0002_move_ledger_prices_and_budgets'),
        ('accounts', '0003_api_tokens'),
    ]

    operations = [
        migrations.DeleteModel(
            name='Profile',
        ),
        migrations.DeleteModel(
            name='UsageRecord',
        ),
    ]
