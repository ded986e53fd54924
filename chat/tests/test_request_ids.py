"""Request ids: on every HTTP request (honoured or generated, echoed in `X-Request-ID`) and
every socket frame, carried into the run's and its tools' log lines; JSON logs on request."""

from __future__ import annotations

import json
import logging

import pytest
from django.http import HttpResponse
from django.urls import path, reverse

from chat.models import Conversation, Run
from chat.tests import review_agents
from chat.tests.helpers import connect, receive_until
from config.logging import JsonFormatter, RequestIdFilter, request_id_bound


@pytest.fixture
def logs(caplog):
    """Records as the console handler sees them: with the request-id filter applied."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    yield caplog
    caplog.handler.removeFilter(caplog.handler.filters[-1])


def request_lines(logs) -> list[logging.LogRecord]:
    return [r for r in logs.records if r.name == "request"]


@pytest.mark.django_db
def test_a_sane_incoming_request_id_is_honoured_echoed_and_logged_with_status_and_duration(client, user, logs):
    client.force_login(user)
    response = client.get(reverse("usage:usage"), HTTP_X_REQUEST_ID="edge-7f3a.1")

    assert response["X-Request-ID"] == "edge-7f3a.1"
    (line,) = request_lines(logs)
    assert line.request_id == "edge-7f3a.1"
    assert (line.method, line.path, line.status) == ("GET", "/usage/", 200) and line.duration_ms >= 0
    assert line.getMessage().startswith("GET /usage/ 200 ")


@pytest.mark.django_db
@pytest.mark.parametrize("incoming", [None, "has spaces", "x" * 65, "new\nline"])
def test_a_missing_or_insane_request_id_is_replaced_by_a_generated_one(client, logs, incoming):
    headers = {} if incoming is None else {"HTTP_X_REQUEST_ID": incoming}
    response = client.get(reverse("usage:usage"), **headers)  # a redirect to sign in: logged too

    generated = response["X-Request-ID"]
    assert len(generated) == 32 and generated != incoming
    assert request_lines(logs)[0].request_id == generated and request_lines(logs)[0].status == 302


def noisy_view(request):
    logging.getLogger("chat.views").info("inside the view")
    return HttpResponse("ok")


urlpatterns = [path("noisy/", noisy_view)]


@pytest.mark.urls(__name__)
def test_every_log_line_during_a_request_carries_its_id(client, logs):
    response = client.get("/noisy/", HTTP_X_REQUEST_ID="req-inner")

    (inner,) = [r for r in logs.records if r.getMessage() == "inside the view"]
    assert response.status_code == 200 and inner.request_id == "req-inner"
    assert [r.request_id for r in request_lines(logs)] == ["req-inner"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("frame_id", ["r-frame-1", None])
async def test_socket_frame_request_id_reaches_the_run_and_its_tool_log_lines(user, script, monkeypatch, logs, frame_id):
    review_agents.install(monkeypatch)
    conversation = await Conversation.objects.acreate(owner=user, agent_key="review-test", current_agent_name="Triage")
    with script(review_agents.tool_then_handoff_steps()):
        ws = await connect(user)
        frame = {"type": "message.send", "conversation": str(conversation.public_id), "content": "Go"}
        if frame_id:
            frame["request_id"] = frame_id
        await ws.send_json_to(frame)
        await receive_until(ws, "run.finished")
        await ws.disconnect()

    run = await Run.objects.aget(conversation=conversation)
    expected = frame_id or run.request_id
    assert expected and len(expected) <= 64  # generated when the frame had none, and stored on the run
    (tool_line,) = [r for r in logs.records if r.name == "chat.tests.review_agents"]
    assert tool_line.getMessage() == f"looked up {review_agents.SECRET}"
    assert tool_line.request_id == expected


def test_json_format_has_one_object_per_line_with_request_id_and_extras():
    record = logging.makeLogRecord({
        "name": "request", "levelno": logging.INFO, "levelname": "INFO", "msg": "GET %s 200", "args": ("/x",),
        "status": 200,
    })
    with request_id_bound("abc"):
        RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)

    payload = json.loads(line)
    assert "\n" not in line
    assert payload["message"] == "GET /x 200" and payload["request_id"] == "abc" and payload["status"] == 200
    assert payload["level"] == "INFO" and payload["logger"] == "request" and payload["time"].endswith("Z")


def test_client_chosen_ids_cannot_forge_log_lines():
    record = logging.makeLogRecord({"msg": "hello"})
    with request_id_bound("evil\nINFO fake line"):
        RequestIdFilter().filter(record)
    assert record.request_id == "evil_INFO_fake_line"
