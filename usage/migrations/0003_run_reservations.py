from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0002_move_ledger_prices_and_budgets'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='reserved_tokens',
            field=models.PositiveIntegerField(default=0),
        ),
    ]
