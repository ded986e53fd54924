"""Usage and cost: stored for both OpenAI API shapes, priced from admin/settings, summed on
the usage page, the conversation footer and `usage_report` without ever treating an unknown
cost as zero."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from agents.testing import ScriptedModel
from django.core.management import CommandError, call_command
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from agents_app import providers
from chat.engine import runs
from chat.models import Conversation, Message
from chat.tests.factories import ConversationFactory, finished_reply
from chat.tests.fake_openai import Turn, fake_openai_server
from chat.tests.scripts import streamed
from usage import quotas
from usage.models import ModelPrice, UsageRecord
from usage.pricing import cost_of

USAGE = {"input_tokens": 1_000_000, "cached_tokens": 200_000, "output_tokens": 500_000}


# --- Usage of real OpenAI models (only the HTTP endpoint is fake) -------------------------
@pytest.fixture
def openai_at(settings):
    def point(base_url: str, api: str) -> None:
        settings.AGENTS_MODEL_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "sk-test-not-real"
        settings.OPENAI_BASE_URL = base_url
        settings.AGENTS_MODEL = "gpt-4.1-mini"
        settings.AGENTS_OPENAI_API = api
        settings.AGENTS_MODEL_MAX_RETRIES = 0
        providers.reset()

    yield point
    providers.reset()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_usage_and_cost_of_both_openai_apis_are_stored_on_the_reply(user, openai_at, api):
    turns = [
        Turn(tool="get_current_time", input_tokens=100, cached_tokens=0, output_tokens=10, reasoning_tokens=0),
        Turn(text="It is noon.", input_tokens=150, cached_tokens=40, output_tokens=20, reasoning_tokens=8),
    ]
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with fake_openai_server(turns) as (base_url, fake):
        openai_at(base_url, api)
        started = await runs.start_run(user=user, conversation=conversation, content="What time is it?")
        await runs.wait_for_run(started.run.public_id)

    reply = await Message.objects.aget(pk=started.reply.pk)
    assert reply.status == Message.Status.COMPLETED and reply.content == "It is noon."
    assert reply.model == "gpt-4.1-mini"
    assert (reply.requests, reply.input_tokens, reply.cached_tokens) == (2, 250, 40)
    assert (reply.output_tokens, reply.reasoning_tokens, reply.total_tokens) == (30, 8, 280)
    # gpt-4.1-mini: 0.40 input, 0.10 cached input, 1.60 output (USD per million tokens)
    assert reply.cost == (Decimal(210) * Decimal("0.40") + 40 * Decimal("0.10") + 30 * Decimal("1.60")) / 1_000_000
    ledger = await UsageRecord.objects.aget(run_id=started.run.pk)
    assert (ledger.user_id, ledger.agent_key, ledger.model) == (user.pk, "assistant", "gpt-4.1-mini")
    assert (ledger.requests, ledger.total_tokens, ledger.cost) == (2, 280, reply.cost)
    paths = {path for path, _ in fake.requests}
    assert paths == {"/v1/responses" if api == "responses" else "/v1/chat/completions"}
    assert all(body["stream"] is True for _, body in fake.requests)
    if api == "chat_completions":
        # The fake, like the real API, reports usage on a stream only when asked.
        assert all(body["stream_options"] == {"include_usage": True} for _, body in fake.requests)


# --- Prices ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_settings_price_applies_with_cached_tokens_discounted():
    # 800k uncached * 0.40 + 200k cached * 0.10 + 500k * 1.60
    assert cost_of(model="gpt-4.1-mini", usage=USAGE) == Decimal("0.32") + Decimal("0.02") + Decimal("0.80")


@pytest.mark.django_db
def test_admin_price_wins_over_settings_and_env():
    ModelPrice.objects.create(
        model="gpt-4.1-mini", input_per_million=Decimal(1), cached_input_per_million=None, output_per_million=Decimal(2)
    )
    # No cached price in admin: cached tokens cost the input price.
    assert cost_of(model="gpt-4.1-mini", usage=USAGE) == Decimal("1.00") + Decimal("1.00")


@pytest.mark.django_db
def test_env_pricing_json_adds_models(settings):
    settings.AGENTS_PRICING = {**settings.AGENTS_PRICING, "my-model": {"input": "0.5", "output": "1.5"}}
    assert cost_of(model="my-model", usage=USAGE) == Decimal("0.50") + Decimal("0.75")
    assert cost_of(model="proxy/my-model", usage=USAGE) == Decimal("1.25")  # name after the last "/"


@pytest.mark.django_db
def test_unknown_model_has_unknown_cost_not_zero():
    assert cost_of(model="mystery-model", usage=USAGE) is None
    assert cost_of(model="local/qwen", usage=USAGE) == Decimal(0)  # local models are free


@pytest.mark.django_db(transaction=True)
async def test_reply_on_an_unpriced_model_is_stored_with_unknown_cost(user):
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with providers.use_model(ScriptedModel([streamed("Hi.")]), label="mystery-model"):
        started = await runs.start_run(user=user, conversation=conversation, content="Hello")
        await runs.wait_for_run(started.run.public_id)

    reply = await Message.objects.aget(pk=started.reply.pk)
    assert reply.total_tokens == 49 and reply.cost is None
    assert (await UsageRecord.objects.aget(run_id=started.run.pk)).cost is None


# --- What users see ---------------------------------------------------------------------
pages = pytest.mark.django_db


@pytest.fixture
def signed_in(client, user, settings):
    settings.AGENTS_MODEL_PROVIDER = "scripted"
    client.force_login(user)
    return client


def replies_at(user, *ages: timedelta, **fields) -> list[Message]:
    conversation = ConversationFactory(owner=user, title=fields.pop("title", "Chat"), agent_key=fields.pop("agent", "assistant"))
    return [finished_reply(conversation=conversation, age=age, **fields) for age in ages]


@pages
def test_usage_page_numbers_equal_the_stored_sums(signed_in, user, other_user):
    replies_at(user, timedelta(minutes=1), timedelta(days=3), timedelta(days=45), title="Trip")
    replies_at(user, timedelta(minutes=2), agent="tutor", title="Maths", total_tokens=1000, input_tokens=900, output_tokens=100, cost=Decimal("0.0005"))
    replies_at(user, timedelta(minutes=3), title="Odd", model="mystery", cost=None, total_tokens=70)
    replies_at(other_user, timedelta(minutes=1), total_tokens=5000)  # never on my page

    response = signed_in.get(reverse("usage:usage"))

    assert response.status_code == 200
    today, _ = quotas.day_window()
    month = today.replace(day=1)
    mine = UsageRecord.objects.filter(user=user)

    def stored(qs):
        return qs.aggregate(
            sum_tokens=Sum("total_tokens"), sum_cost=Sum("cost"), unknown=Count("id", filter=Q(cost__isnull=True))
        )

    for key, since in (("today", today), ("month", month)):
        expected = stored(mine.filter(created_at__gte=since))
        shown = response.context[key]
        assert shown.total_tokens == expected["sum_tokens"]
        assert shown.cost == expected["sum_cost"]
        assert shown.unknown_cost == expected["unknown"]
    by_agent = {row.key: row.total_tokens for row in response.context["by_agent"]}
    assert by_agent == {
        agent: stored(mine.filter(created_at__gte=month, agent_key=agent))["sum_tokens"]
        for agent in mine.filter(created_at__gte=month).values_list("agent_key", flat=True).distinct()
    }
    assert "5,000" not in response.content.decode()
    ever = signed_in.get(reverse("usage:usage") + "?period=all")
    assert ever.context["period_total"].total_tokens == stored(mine)["sum_tokens"]
    assert "some costs unknown" in ever.content.decode()  # the unpriced reply is not summed as free


@pages
def test_usage_page_by_conversation_covers_all_time_on_request(signed_in, user):
    replies_at(user, timedelta(days=45), title="Ancient")

    recent = signed_in.get(reverse("usage:usage")).context["by_conversation"]
    ever = signed_in.get(reverse("usage:usage") + "?period=all").context["by_conversation"]

    assert [row.label for row in ever] == ["Ancient"] and [row.total_tokens for row in ever] == [49]
    assert all(row.label != "Ancient" for row in recent)


@pages
def test_usage_page_requires_sign_in(client):
    response = client.get(reverse("usage:usage"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))


@pages
def test_conversation_footer_shows_unknown_costs_as_unknown(signed_in, user):
    known, = replies_at(user, timedelta(minutes=1), title="Mixed")
    finished_reply(conversation=known.conversation, model="mystery", cost=None, total_tokens=10)

    page = signed_in.get(reverse("chat:conversation_detail", args=[known.conversation.public_id])).content.decode()

    assert '<span data-role="conversation-usage">59 tokens · ≥ $0.000028, some costs unknown</span> in this conversation' in page


@pages
def test_conversation_footer_with_only_known_costs_shows_the_sum(signed_in, user):
    first, _ = replies_at(user, timedelta(minutes=1), timedelta(minutes=2), title="Known")

    page = signed_in.get(reverse("chat:conversation_detail", args=[first.conversation.public_id])).content.decode()

    assert '<span data-role="conversation-usage">98 tokens · $0.000056</span> in this conversation' in page


# --- usage_report -------------------------------------------------------------------------
def report(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


@pages
def test_usage_report_totals_by_user_match_the_stored_sums(user, other_user):
    replies_at(user, timedelta(hours=1), timedelta(days=2))
    replies_at(other_user, timedelta(hours=3), total_tokens=1000, input_tokens=900, output_tokens=100)
    replies_at(other_user, timedelta(days=30))  # outside --since 7d

    rows = list(csv.DictReader(io.StringIO(report("--since", "7d", "--by", "user", "--csv"))))

    by_user = {row["user"]: row for row in rows}
    assert by_user[user.email]["total_tokens"] == "98" and by_user[user.email]["runs"] == "2"
    assert by_user[other_user.email]["total_tokens"] == "1000"
    assert by_user["Total"]["total_tokens"] == "1098"
    assert Decimal(by_user["Total"]["cost"]) == Decimal("0.00002800") * 3


@pages
def test_usage_report_table_by_agent_and_day(user):
    replies_at(user, timedelta(hours=1), agent="tutor")
    replies_at(user, timedelta(hours=1), model="mystery", cost=None)

    by_agent = report("--since", "1d", "--by", "agent")
    by_day = report("--since", "1d", "--by", "day")

    assert "tutor" in by_agent and "assistant" in by_agent
    assert "≥ $0.000028, some costs unknown" in by_agent.splitlines()[-1]
    assert timezone.localdate().isoformat() in by_day or (timezone.localdate() - timedelta(days=1)).isoformat() in by_day
    assert by_day.splitlines()[-1].split()[:2] == ["Total", "2"]


@pages
def test_usage_report_refuses_a_bad_period():
    with pytest.raises(CommandError, match="not a duration"):
        report("--since", "soon")


# --- Spent tokens stay spent -----------------------------------------------------------------
@pages
def test_deleting_a_conversation_gives_no_tokens_back(signed_in, user, settings):
    from chat import services

    settings.AGENTS_DAILY_TOKEN_BUDGET = 100
    reply = finished_reply(owner=user, total_tokens=80)
    services.conversation_delete(conversation=reply.conversation)

    assert quotas.quota_status(user=user).used == 80
    assert signed_in.get(reverse("usage:usage")).context["today"].total_tokens == 80
    (row,) = list(csv.DictReader(io.StringIO(report("--since", "1d", "--by", "conversation", "--csv"))))[:1]
    assert row["conversation"] == "(deleted or untitled conversation)" and row["total_tokens"] == "80"


@pytest.mark.django_db(transaction=True)
async def test_a_regenerated_reply_still_counts(user, script):
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")
    with script([streamed("First try."), streamed("Second try.")]):
        first = await runs.start_run(user=user, conversation=conversation, content="Hi")
        await runs.wait_for_run(first.run.public_id)
        second = await runs.replace_last_turn(user=user, conversation=conversation)
        await runs.wait_for_run(second.run.public_id)

    assert not await Message.objects.filter(pk=first.reply.pk).aexists()  # the old reply is gone…
    used = await asyncio.to_thread(lambda: quotas.tokens_used_today(user=user))
    assert used == 2 * 49  # …but its tokens were spent
