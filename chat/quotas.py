"""The daily token budget: checked before a run is created, so a user over budget spends
nothing (no run, no message, no model call).

A day is a calendar day in the site's TIME_ZONE (UTC by default). What counts is the usage of
the user's runs started that day, from the ledger (`accounts.UsageRecord`), so deleting a
conversation or regenerating a reply gives nothing back; a run still in flight counts once it
finishes (its usage is recorded with its reply). The check is a soft limit: runs already started
finish even if they cross the budget, and the next message is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone


class QuotaExceeded(Exception):
    """The user has used up today's tokens; `message` is safe to show them."""

    code = "quota_exceeded"

    def __init__(self, status: QuotaStatus) -> None:
        self.status = status
        self.message = (
            f"You have used your {status.budget:,} tokens for today. "
            f"Your budget resets at {_clock(status.resets_at)} ({_in(status.resets_at)})."
        )
        super().__init__(self.message)


@dataclass(frozen=True)
class QuotaStatus:
    budget: int  # tokens per day; 0 = unlimited
    used: int
    resets_at: datetime

    @property
    def unlimited(self) -> bool:
        return self.budget == 0

    @property
    def remaining(self) -> int | None:
        return None if self.unlimited else max(self.budget - self.used, 0)

    @property
    def exceeded(self) -> bool:
        return not self.unlimited and self.used >= self.budget

    @property
    def percent_used(self) -> int:
        return 0 if self.unlimited else min(100, round(100 * self.used / self.budget))


def day_window(*, now: datetime | None = None) -> tuple[datetime, datetime]:
    """Start of today and start of tomorrow, in the site's time zone."""
    local = timezone.localtime(now or timezone.now())
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # Normalise through the zone so a DST change does not shift midnight.
    end = timezone.make_aware(datetime.combine(start.date() + timedelta(days=1), datetime.min.time()))
    return start, end


def daily_budget(*, user) -> int:
    """The user's own budget when staff set one, else the site default. 0 = unlimited."""
    from accounts.models import Profile

    override = Profile.objects.filter(user=user).values_list("daily_token_budget", flat=True).first()
    return settings.AGENTS_DAILY_TOKEN_BUDGET if override is None else override


def tokens_used_today(*, user, now: datetime | None = None) -> int:
    from accounts.models import UsageRecord

    start, end = day_window(now=now)
    used = (
        UsageRecord.objects.for_user(user)
        .filter(created_at__gte=start, created_at__lt=end)
        .aggregate(used=Sum("total_tokens"))["used"]
    )
    return used or 0


def quota_status(*, user, now: datetime | None = None) -> QuotaStatus:
    budget = daily_budget(user=user)
    used = 0 if budget == 0 else tokens_used_today(user=user, now=now)
    return QuotaStatus(budget=budget, used=used, resets_at=day_window(now=now)[1])


def check_quota(*, user) -> QuotaStatus:
    """Raise `QuotaExceeded` when the user may not start another run today."""
    status = quota_status(user=user)
    if status.exceeded:
        raise QuotaExceeded(status)
    return status


def _clock(moment: datetime) -> str:
    local = timezone.localtime(moment)
    return f"{local:%H:%M} {local.tzname()}"


def _in(moment: datetime) -> str:
    seconds = max(int((moment - timezone.now()).total_seconds()), 60)
    hours, minutes = divmod(seconds // 60, 60)
    return f"in {hours} h {minutes} min" if hours else f"in {minutes} min"
