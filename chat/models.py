import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from usage.models import TokenCounts


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user) -> "ConversationQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Conversation(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    agent_key = models.CharField(max_length=64)
    title = models.CharField(max_length=200, blank=True)
    # The agent that answered last: after a handoff the next turn continues with it.
    current_agent_name = models.CharField(max_length=128, blank=True)
    # The model its user picked (a key of AGENTS_MODELS); "" = the agent's, else the default.
    model_key = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.public_id}"

    @property
    def session_id(self) -> str:
        """The id of this conversation's SDK memory (`agents_app.session.DjangoSession`)."""
        return f"conversation-{self.public_id}"

    @property
    def model_in_use(self) -> str:
        """The key of the model its next run uses: the user's pick, else its agent's, else the
        deployment's default (`agents_app.providers.key_for`)."""
        from agents_app import providers
        from agents_app.registry import UnknownAgent, get_spec

        try:
            agent_model = get_spec(self.agent_key).model
        except UnknownAgent:
            agent_model = ""
        return providers.key_for(conversation_model=self.model_key, agent_model=agent_model)

    @property
    def group_name(self) -> str:
        """Channel-layer group every socket watching this conversation joins."""
        return f"conversation.{self.public_id}"


class MessageQuerySet(models.QuerySet):
    def for_user(self, user) -> "MessageQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(conversation__owner=user)

    def assistant(self) -> "MessageQuerySet":
        return self.filter(role=Message.Role.ASSISTANT)


class Message(TokenCounts):
    """A user's message or an agent's reply. A reply keeps a copy of its run's usage (model,
    tokens, cost) for display; every total is summed from the ledger (`usage.selectors`)."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"
        BLOCKED = "blocked"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    run = models.ForeignKey("chat.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    agent_name = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.COMPLETED, db_index=True)
    error = models.TextField(blank=True)
    # Tool calls and handoffs of an assistant reply, in order, as shown live:
    # [{"kind": "tool", "call_id", "name", "arguments", "agent", "output", "status"}, ...]
    activity = models.JSONField(default=list, blank=True)
    # Structured final output (a card), when the agent has an output type.
    structured = models.JSONField(null=True, blank=True)

    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class RunQuerySet(models.QuerySet):
    def active(self) -> "RunQuerySet":
        return self.filter(status__in=Run.ACTIVE_STATUSES)

    def active_in(self, conversation) -> "RunQuerySet":
        """The conversation's active run (at most one: see the constraint on `Run`)."""
        return self.active().filter(conversation=conversation)

    def stale(self, *, now=None) -> "RunQuerySet":
        """Active runs whose process stopped beating: it died or lost its database."""
        now = now or timezone.now()
        cutoff = now - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
        return self.active().filter(heartbeat_at__lt=cutoff).exclude(status=Run.Status.AWAITING_APPROVAL)

    def for_user(self, user) -> "RunQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(conversation__owner=user)


class Run(models.Model):
    """One agent run. While active, it is the conversation's lock (see the constraint)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        AWAITING_APPROVAL = "awaiting_approval"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"
        BLOCKED = "blocked"
        INTERRUPTED = "interrupted"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.AWAITING_APPROVAL)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    agent_name = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Id of the newest SDK item before this run: the point a blocked run rolls back to.
    history_mark = models.BigIntegerField(null=True, blank=True)
    # The serialised SDK RunState while the run waits for a tool approval. Server-side only:
    # it is never sent to a client, and only state stored here is ever deserialised.
    state = models.TextField(blank=True)
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    # What happened, for staff review: every event of the run except text deltas.
    events = models.JSONField(default=list, blank=True)
    # The seq of the last event published; a run resumed by another process continues from it,
    # so clients that deduplicate by seq never drop a new event.
    last_seq = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The cross-process lock: a second active run of a conversation cannot be inserted.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status__in=["queued", "running", "awaiting_approval"]),
                name="one_active_run_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"Run {self.public_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES


class ApprovalQuerySet(models.QuerySet):
    def pending(self) -> "ApprovalQuerySet":
        return self.filter(status=Approval.Status.PENDING)

    def for_user(self, user) -> "ApprovalQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(run__conversation__owner=user)


class Approval(models.Model):
    """A tool call waiting for the user's decision (human in the loop)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    call_id = models.CharField(max_length=128)
    tool_name = models.CharField(max_length=128)
    arguments = models.JSONField(default=dict, blank=True)
    agent_name = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "call_id"], name="one_approval_per_call")]

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.status})"


class FeedbackQuerySet(models.QuerySet):
    def for_user(self, user) -> "FeedbackQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)


class Feedback(models.Model):
    """A user's verdict on one reply: thumbs up or down and an optional comment. One per user
    and reply; giving it again changes it (`chat.feedback.feedback_give`)."""

    class Rating(models.TextChoices):
        UP = "up", "Good reply"
        DOWN = "down", "Bad reply"

    COMMENT_CHARS = 2000

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rating = models.CharField(max_length=4, choices=Rating.choices, db_index=True)
    comment = models.TextField(blank=True, max_length=COMMENT_CHARS)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = FeedbackQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name_plural = "feedback"
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="one_feedback_per_user_and_reply")]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} from {self.user}"
