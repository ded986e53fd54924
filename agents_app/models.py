import uuid

from django.conf import settings
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


# --- Data the seed agents' tools work on -------------------------------------------
class KnowledgeArticleQuerySet(models.QuerySet):
    def published(self):
        return self.filter(is_published=True)


class KnowledgeArticle(models.Model):
    """A help-centre article the support and research agents search."""

    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    body = models.TextField(help_text="Markdown.")
    tags = models.CharField(max_length=200, blank=True, help_text="Comma-separated.")
    is_published = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = KnowledgeArticleQuerySet.as_manager()

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class TicketQuerySet(models.QuerySet):
    def for_user(self, user):
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Ticket(models.Model):
    """A support ticket opened by the support agent on behalf of the signed-in user."""

    class Priority(models.TextChoices):
        LOW = "low"
        NORMAL = "normal"
        HIGH = "high"

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tickets")
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="tickets"
    )
    subject = models.CharField(max_length=200)
    description = models.TextField()
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TicketQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{str(self.public_id)[:8]} {self.subject}"


class OrderQuerySet(models.QuerySet):
    def for_user(self, user):
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Order(models.Model):
    """A small demo table for the order-status agent (structured output after a tool call)."""

    class Status(models.TextChoices):
        PROCESSING = "processing"
        SHIPPED = "shipped"
        DELIVERED = "delivered"
        CANCELLED = "cancelled"

    number = models.CharField(max_length=20, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="orders")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROCESSING)
    items = models.JSONField(default=list, help_text='[{"name": ..., "quantity": ...}]')
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    carrier = models.CharField(max_length=50, blank=True)
    estimated_delivery = models.DateField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    refund_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.number


# --- Tracing ---------------------------------------------------------------------------
class TraceQuerySet(models.QuerySet):
    def of_groups(self, group_ids) -> "TraceQuerySet":
        """The traces of these groups (a chat trace's group is its conversation's public id)."""
        return self.filter(group_id__in=[str(group_id) for group_id in group_ids])


class TraceRecord(models.Model):
    """One SDK trace (usually one run), stored locally by `agents_app.tracing`."""

    trace_id = models.CharField(max_length=64, unique=True)
    workflow_name = models.CharField(max_length=200, blank=True)
    group_id = models.CharField(max_length=100, blank=True, db_index=True)  # the conversation
    metadata = models.JSONField(default=dict, blank=True)
    run = models.ForeignKey("chat.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="traces")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="traces"
    )
    agent_key = models.CharField(max_length=64, blank=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = TraceQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "trace"

    def __str__(self) -> str:
        return f"{self.workflow_name} {self.trace_id}"


class SpanRecord(models.Model):
    """One span of a trace: agent, generation/response, function, handoff, guardrail, custom."""

    span_id = models.CharField(max_length=64, unique=True)
    trace = models.ForeignKey(TraceRecord, on_delete=models.CASCADE, related_name="spans")
    parent_id = models.CharField(max_length=64, blank=True, db_index=True)
    kind = models.CharField(max_length=32, db_index=True)
    name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        verbose_name = "span"

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}"
