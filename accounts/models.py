from django.conf import settings
from django.db import models
from django.utils import timezone


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
