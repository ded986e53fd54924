"""Tokens and money: the ledger, prices and per-user budgets.

`TokenCounts` is the one list of token fields in the project: the ledger (`UsageRecord`) and a
reply (`chat.Message`, which keeps a copy for display) both inherit it, and `TOKEN_FIELDS` is
read off it. The ledger refers to runs and conversations with lazy foreign keys, so this app
imports nothing from `chat`.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenCounts(models.Model):
    """What model calls consumed, and what that cost."""

    model = models.CharField(max_length=128, blank=True)
    requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # None means "unknown" (a model missing from the pricing table), never "free".
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)

    class Meta:
        abstract = True


TOKEN_FIELDS = tuple(field.name for field in TokenCounts._meta.local_fields if isinstance(field, models.PositiveIntegerField))


class UsageRecordQuerySet(models.QuerySet):
    def for_user(self, user) -> "UsageRecordQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)


class UsageRecord(TokenCounts):
    """What one run consumed: the accounting behind daily budgets and usage reports.

    Written in the transaction that stores the run's reply (`usage.services.usage_record_store`),
    and kept when the reply, the run or the conversation goes (regenerate/edit, delete,
    retention): those tokens were spent all the same."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    run = models.OneToOneField("chat.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_record")
    agent_key = models.CharField(max_length=64, blank=True, db_index=True)
    # Tokens held against the daily budget while the run is in flight (its real usage is not
    # known yet); 0 once the run settles, pauses for an approval or dies.
    reserved_tokens = models.PositiveIntegerField(default=0)
    # Some counts were estimated here, not reported by the provider: a model call that was
    # stopped or failed mid-stream is billed all the same (its input counted locally, its output
    # as streamed).
    estimated = models.BooleanField(default=False)
    # When the run started (its reply's creation): the day its tokens count against.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="usage_record_user_time_idx")]

    def __str__(self) -> str:
        return f"{self.total_tokens} tokens by {self.user_id} on {self.created_at:%Y-%m-%d}"


class ModelPrice(models.Model):
    """A price set by staff; overrides `settings.AGENTS_PRICING` for that model."""

    model = models.CharField(max_length=128, unique=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_million = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model


class TokenBudget(models.Model):
    """A user's own daily token budget, set by staff; without one the site default applies."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_budget")
    daily_token_budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per day for this user. Empty: the site default; 0: unlimited."
    )

    class Meta:
        verbose_name = "token budget"

    def __str__(self) -> str:
        return f"Budget of {self.user}"
