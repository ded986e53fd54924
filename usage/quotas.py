"""The daily token budget: checked before a run is created, so a user over budget spends
nothing (no run, no message, no model call).

A day is a calendar day in the site's TIME_ZONE (UTC by default). What counts is the usage of
the user's runs started that day, from the ledger, so deleting a conversation or regenerating
a reply gives nothing back. A run in flight holds `AGENTS_RUN_TOKEN_RESERVATION` tokens until
it settles to its real usage, and a run starts only while used + reserved tokens are under the
budget; the check and the reservation happen under a lock on the user's row (see
`chat.services`), so parallel messages, from any number of processes, cannot all pass it.

The guarantee: a user can exceed the day's budget by at most one reservation plus whatever
single runs use beyond their reservation (runs already started always finish).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from config.errors import AppError
from usage.models import TokenBudget, UsageRecord


@dataclass(frozen=True)
class QuotaStatus:
    budget: int  # tokens per day; 0 = unlimited
    used: int  # by runs that settled
    resets_at: datetime
    reserved: int = 0  # held by runs in flight

    @property
    def unlimited(self) -> bool:
        return self.budget == 0

    @property
    def remaining(self) -> int | None:
        return None if self.unlimited else max(self.budget - self.used - self.reserved, 0)

    @property
    def exceeded(self) -> bool:
        return not self.unlimited and self.used + self.reserved >= self.budget

    @property
    def percent_used(self) -> int:
        return 0 if self.unlimited else min(100, round(100 * (self.used + self.reserved) / self.budget))


class QuotaExceeded(AppError):
    """The user has used up today's tokens; `message` says when the budget resets."""

    code = "quota_exceeded"

    def __init__(self, status: QuotaStatus) -> None:
        self.status = status
        seconds = max(int((status.resets_at - timezone.now()).total_seconds()), 1)
        super().__init__(
            message=(
                f"You have used your {status.budget:,} tokens for today. "
                f"Your budget resets at {clock(status.resets_at)} ({_in(status.resets_at)})."
            ),
            retry_after=seconds,
        )


def day_window(*, now: datetime | None = None) -> tuple[datetime, datetime]:
    """Start of today and start of tomorrow, in the site's time zone."""
    local = timezone.localtime(now or timezone.now())
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # Normalise through the zone so a DST change does not shift midnight.
    end = timezone.make_aware(datetime.combine(start.date() + timedelta(days=1), datetime.min.time()))
    return start, end


def daily_budget(*, user) -> int:
    """The user's own budget when staff set one, else the site default. 0 = unlimited."""
    override = TokenBudget.objects.filter(user=user).values_list("daily_token_budget", flat=True).first()
    return settings.AGENTS_DAILY_TOKEN_BUDGET if override is None else override


def _today(user, now: datetime | None) -> dict[str, int | None]:
    start, end = day_window(now=now)
    return (
        UsageRecord.objects.for_user(user)
        .filter(created_at__gte=start, created_at__lt=end)
        .aggregate(used=Sum("total_tokens"), reserved=Sum("reserved_tokens"))
    )


def tokens_used_today(*, user, now: datetime | None = None) -> int:
    return _today(user, now)["used"] or 0


def quota_status(*, user, now: datetime | None = None) -> QuotaStatus:
    budget = daily_budget(user=user)
    today = {} if budget == 0 else _today(user, now)
    return QuotaStatus(
        budget=budget, used=today.get("used") or 0, reserved=today.get("reserved") or 0, resets_at=day_window(now=now)[1]
    )


def check_quota(*, user) -> QuotaStatus:
    """Raise `QuotaExceeded` when the user may not start another run today."""
    status = quota_status(user=user)
    if status.exceeded:
        raise QuotaExceeded(status)
    return status


def clock(moment: datetime) -> str:
    """'00:00 UTC': a moment as the site's wall clock."""
    local = timezone.localtime(moment)
    return f"{local:%H:%M} {local.tzname()}"


def _in(moment: datetime) -> str:
    seconds = max(int((moment - timezone.now()).total_seconds()), 60)
    hours, minutes = divmod(seconds // 60, 60)
    return f"in {hours} h {minutes} min" if hours else f"in {minutes} min"
