"""Users' feedback on replies: one thumbs up or down, with an optional comment, per user and
reply. Giving it again changes it; an empty rating takes it back (with its comment).

The page's form, the socket's `feedback.give` frame and `PUT /api/messages/<id>/feedback` all
call `feedback_give`; once it is stored, every open tab of the user hears `feedback.updated`
(`chat.activity`). `feedback_report_columns` adds the thumbs to the usage report (registered
in `chat.apps`, so `usage` never imports chat)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet

from chat import activity, wire
from chat.models import Feedback, Message
from config.errors import AppError
from usage.columns import ReportColumns
from usage.selectors import group_key


def feedback_give(*, user, message: Message, rating: str, comment: str = "", request_id: str | None = None) -> Feedback | None:
    """Store `user`'s verdict on the reply `message` (they must own its conversation: callers
    look it up with `Message.objects.for_user`). Returns None when the feedback was removed.
    Refuses with `not_a_reply`, `reply_streaming`, `invalid_field` (a rating other than "up",
    "down" or "") or `too_long` (the comment)."""
    if message.role != Message.Role.ASSISTANT:
        raise AppError("not_a_reply", "Only replies can get feedback.")
    if message.status == Message.Status.STREAMING:
        raise AppError("reply_streaming", "Wait for the reply to finish before rating it.")
    comment = (comment or "").strip()
    if rating not in Feedback.Rating.values and rating != "":
        raise AppError("invalid_field", "Rate a reply up or down.")
    if len(comment) > Feedback.COMMENT_CHARS:
        raise AppError("too_long", f"A comment has at most {Feedback.COMMENT_CHARS:,} characters.")
    feedback = _store(user=user, message=message, rating=rating, comment=comment)
    activity.send_to_user_on_commit(user.pk, wire.feedback_updated(message, feedback, request_id=request_id))
    return feedback


def _store(*, user, message: Message, rating: str, comment: str) -> Feedback | None:
    if not rating:  # taken back, comment and all
        Feedback.objects.filter(message=message, user=user).delete()
        return None
    for _attempt in range(2):
        try:
            with transaction.atomic():
                feedback, _ = Feedback.objects.update_or_create(
                    message=message, user=user, defaults={"rating": rating, "comment": comment}
                )
            return feedback
        except IntegrityError:  # two tabs rated at once; the second now finds the row and updates it
            continue
    raise AppError("conflict", "Could not store the feedback; try again.")


# --- The usage report's thumbs columns ----------------------------------------------------
def feedback_counts(records: QuerySet, by: str | None) -> dict[Any, dict[str, int]]:
    """Thumbs up and down given on the replies of the report's runs (`records`, usage ledger
    rows), per group key of the report's grouping (`by`; None: one total under key None)."""
    given = Feedback.objects.filter(message__run__usage_record__in=records).order_by()
    counts = {
        "thumbs_up": Count("id", filter=Q(rating=Feedback.Rating.UP)),
        "thumbs_down": Count("id", filter=Q(rating=Feedback.Rating.DOWN)),
    }
    if by is None:
        return {None: given.aggregate(**counts)}
    grouped = given.annotate(report_key=group_key(by, through="message__run__usage_record")).values("report_key")
    return {row.pop("report_key"): row for row in grouped.annotate(**counts)}


feedback_report_columns = ReportColumns(
    columns=(("thumbs_up", "Thumbs up"), ("thumbs_down", "Thumbs down")),
    values=feedback_counts,
)
