from django.conf import settings
from django.db import models
from django.utils import timezone


class Profile(models.Model):
    """Per-user settings staff can change in admin."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    # None: the default from settings.AGENTS_DAILY_TOKEN_BUDGET.
    daily_token_budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per day; empty uses the site default."
    )

    def __str__(self) -> str:
        return f"Profile of {self.user}"


class UsageRecordQuerySet(models.QuerySet):
    def for_user(self, user) -> "UsageRecordQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)


class UsageRecord(models.Model):
    """What one run consumed: the accounting behind daily budgets and usage reports.

    Written with the run's reply (`chat.services.usage_record_store`), and kept when the reply,
    the run or the conversation goes (regenerate/edit, delete, retention): those tokens were
    spent all the same. The reply keeps its own copy of the counts for display."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    run = models.OneToOneField(
        "chat.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_record"
    )
    agent_key = models.CharField(max_length=64, blank=True, db_index=True)
    model = models.CharField(max_length=128, blank=True)
    requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # None means "unknown" (a model missing from the pricing table), never "free".
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    # When the run started (its reply's creation): the day its tokens count against.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="usagerecord_user_time_idx")]

    def __str__(self) -> str:
        return f"{self.total_tokens} tokens by {self.user_id} on {self.created_at:%Y-%m-%d}"


class ApiTokenQuerySet(models.QuerySet):
    def for_user(self, user) -> "ApiTokenQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)

    def usable(self, *, now=None) -> "ApiTokenQuerySet":
        """Neither revoked nor expired."""
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class ApiToken(models.Model):
    """A bearer token for non-browser clients (`Authorization: Bearer ac_<prefix>_<secret>`).

    Only the SHA-256 of the whole token is stored: the secret is shown once, when the token is
    created (`accounts.services.api_token_create`), and cannot be recovered. The prefix is public:
    it identifies the token in lists and is the lookup key when a client presents it."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    # hex SHA-256 of the full token string; never the token itself.
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (ac_{self.prefix}_…)"

    @property
    def display_prefix(self) -> str:
        return f"ac_{self.prefix}_…"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return not self.is_revoked and not self.is_expired
