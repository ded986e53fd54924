"""The signed-in user's own usage: today, this month, by agent and by conversation."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from usage.quotas import day_window, quota_status
from usage.selectors import usage_by, usage_records, usage_totals

PERIODS = {"today": "Today", "month": "This month", "all": "All time"}


@login_required
def usage_page(request):
    from agents_app.registry import all_specs  # agent titles for the table

    today, _ = day_window()
    month = today.replace(day=1)
    period = request.GET.get("period") if request.GET.get("period") in PERIODS else "month"
    since = {"today": today, "month": month, "all": None}[period]
    # Only this user's usage, always: every number below comes from these querysets.
    in_period = usage_records(user=request.user, since=since)
    titles = {spec.key: spec.title for spec in all_specs()}
    by_agent = usage_by(in_period, by="agent")
    for row in by_agent:
        row.label = titles.get(row.key, row.key)
    return render(
        request,
        "usage/usage.html",
        {
            "today": usage_totals(usage_records(user=request.user, since=today)),
            "month": usage_totals(usage_records(user=request.user, since=month)),
            "period": period,
            "period_label": PERIODS[period],
            "periods": PERIODS,
            "period_total": usage_totals(in_period),
            "by_agent": by_agent,
            "by_conversation": usage_by(in_period, by="conversation", limit=100),
            "quota": quota_status(user=request.user),
        },
    )
