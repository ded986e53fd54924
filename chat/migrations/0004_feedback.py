from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0003_run_resume_bookkeeping"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Feedback",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "rating",
                    models.CharField(
                        choices=[("up", "Good reply"), ("down", "Bad reply")], db_index=True, max_length=4
                    ),
                ),
                ("comment", models.TextField(blank=True, max_length=2000)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True, db_index=True)),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=models.deletion.CASCADE, related_name="feedback", to="chat.message"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "feedback",
                "ordering": ["-updated_at", "-id"],
                "constraints": [
                    models.UniqueConstraint(fields=("message", "user"), name="one_feedback_per_user_and_reply")
                ],
            },
        ),
    ]
