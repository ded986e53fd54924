"""Model prices now live in the usage app (usage/0002 copied the rows)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0002_move_ledger_prices_and_budgets'),
        ('agents_app', '0004_order_refunds'),
    ]

    operations = [
        migrations.DeleteModel(
            name='ModelPrice',
        ),
    ]
