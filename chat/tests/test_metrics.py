"""Operators see the process: /metrics in Prometheus format, for staff or the metrics token
only."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from chat.models import Conversation
from chat.tests.helpers import connect, receive_until, send_message
from chat.tests.scripts import streamed
from config import metrics

pytestmark = pytest.mark.django_db(transaction=True)


def _registry_broke(*args):
    # Up here, away from the token: the DEBUG page shows the source lines around the raise.
    raise RuntimeError("the registry broke")


def scrape(client: Client, **headers) -> tuple[int, str]:
    response = client.get("/metrics", **headers)
    return response.status_code, response.content.decode()


def value(text: str, sample: str, default: float | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    if default is not None:
        return default
    raise AssertionError(f"{sample} not in the metrics")


async def test_metrics_count_runs_tokens_errors_and_open_sockets(user, script, settings):
    user.is_staff = True
    await user.asave()
    staff = Client()
    await sync_to_async(staff.force_login)(user)
    _, before = await sync_to_async(scrape)(staff)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant", current_agent_name="Assistant")

    with script([streamed("Hello ", "there.")]):
        ws = await connect(user)
        await send_message(ws, conversation)
        await receive_until(ws, "run.finished")
        await ws.send_json_to({"type": "nonsense"})
        await receive_until(ws, "error")
        status, during = await sync_to_async(scrape)(staff)
        await ws.disconnect()

    completed = 'agents_runs_finished_total{status="completed"}'
    assert status == 200
    assert value(during, completed) == value(before, completed, default=0) + 1
    assert value(during, 'agents_tokens_total{direction="input",model="gpt-4.1-mini"}') >= 42
    assert value(during, 'agents_errors_total{code="unknown_type"}') >= 1
    assert value(during, "agents_sockets_open") >= 1
    assert "agents_time_to_first_token_seconds_bucket" in during and "agents_db_pool" in during


def test_metrics_are_hidden_from_everyone_but_staff_and_the_token(client, user, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    assert scrape(client)[0] == 404
    client.force_login(user)
    assert scrape(client)[0] == 404
    assert scrape(Client(), HTTP_AUTHORIZATION="Bearer wrong")[0] == 404
    assert scrape(Client(), HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")[0] == 200


MALFORMED = ["Bearer é", "Bearer s3cret-metrics-tokén", "Bearer \x00\x1f", "Bearer " + "ÿ" * 5000, "Bearer", "Basic é"]


@pytest.mark.parametrize("authorization", MALFORMED)
async def test_a_malformed_metrics_credential_is_a_404_that_shows_nothing(settings, authorization):
    settings.DEBUG = True  # the DEBUG error page would list the view's variables
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    response = await AsyncClient(raise_request_exception=False).get("/metrics", headers={"Authorization": authorization})
    assert response.status_code == 404
    assert "s3cret-metrics-token" not in response.content.decode()


async def test_a_500_of_metrics_in_debug_does_not_show_the_metrics_token(user, settings, monkeypatch):
    settings.DEBUG = True
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    user.is_staff = True
    await user.asave()
    staff = AsyncClient(raise_request_exception=False)
    await staff.aforce_login(user)  # staff need no token, so nothing tells the page what to hide
    monkeypatch.setattr(metrics, "generate_latest", _registry_broke)
    response = await staff.get("/metrics", headers={"Accept": "text/html"})
    page = response.content.decode()
    assert response.status_code == 500 and "the registry broke" in page  # the DEBUG page
    assert "s3cret-metrics-token" not in page
