from django.conf import settings
from django.db import models


class Profile(models.Model):
    """Per-user settings staff can change in admin."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    # None: the default from settings.AGENTS_DAILY_TOKEN_BUDGET.
    daily_token_budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per day; empty uses the site default."
    )

    def __str__(self) -> str:
        return f"Profile of {self.user}"
