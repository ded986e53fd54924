from django.db import models


class AgentSessionQuerySet(models.QuerySet):
    def inactive_since(self, cutoff):
        return self.filter(updated_at__lt=cutoff)


class AgentSession(models.Model):
    """One SDK conversation memory (`Session.session_id`)."""

    session_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = AgentSessionQuerySet.as_manager()

    class Meta:
        verbose_name = "SDK session"

    def __str__(self) -> str:
        return self.session_id


class SessionItem(models.Model):
    """One SDK input item, stored exactly as the Runner handed it over.

    The payload is JSON *text*, not a JSONField: Postgres `jsonb` rejects NUL characters and
    reorders keys, and the SDK needs back exactly what it stored.
    """

    # The autoincrement id is the order of the conversation; item ids from the model are not
    # unique (Chat Completions items all carry "__fake_id__").
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="items")
    payload = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "SDK item"
        indexes = [models.Index(fields=["session", "-id"], name="sessionitem_latest_idx")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.pk}"
