"""The DEBUG error page (and the error report Django would mail) never shows an API token: not
the caller's bearer token, not a token a view just created."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from accounts import views as account_views
from accounts.debug import TOKEN_PATTERN
from accounts.services import api_token_create
from chat import selectors
from chat.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


def _boom(*args, **kwargs):
    raise RuntimeError("something broke")


@pytest.mark.parametrize("accept", ["text/html", "*/*"])
async def test_a_500_page_in_debug_does_not_show_the_callers_bearer_token(user, settings, monkeypatch, accept):
    settings.DEBUG = True
    created = await sync_to_async(api_token_create)(owner=user, name="debug")
    conversation = await Conversation.objects.acreate(owner=user, agent_key="assistant")

    monkeypatch.setattr(selectors, "conversation_for", _boom)
    response = await AsyncClient(raise_request_exception=False).get(
        f"/api/conversations/{conversation.public_id}",
        headers={"Authorization": f"Bearer {created.secret}", "Accept": accept},
    )
    page = response.content.decode()

    assert response.status_code == 500 and "something broke" in page  # it is the DEBUG page
    assert "raw" in page  # the wrapper's frame is on it, with its variables
    assert created.secret not in page
    assert created.secret.rsplit("_", 1)[1] not in page  # not even the secret part
    assert "HTTP_AUTHORIZATION" in page  # the header is listed, its value hidden


def test_a_500_page_in_debug_does_not_show_a_token_a_view_just_created(user, settings, monkeypatch):
    settings.DEBUG = True
    monkeypatch.setattr(account_views, "render", _boom)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    response = client.post(
        "/api-tokens/",
        {"name": "laptop", "expires": "never", "password": "correct horse battery staple"},
        headers={"Accept": "text/html"},
    )
    page = response.content.decode()

    assert response.status_code == 500 and "something broke" in page
    assert user.api_tokens.count() == 1  # it was created, then the page failed
    assert "created" in page and TOKEN_PATTERN.search(page) is None
    assert "correct horse battery staple" not in page  # nor the password that confirmed it


def _policy(response) -> dict[str, str]:
    header = response.get("Content-Security-Policy") or ""
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def _error_response(kind: str, user, settings, monkeypatch):
    client = Client(raise_request_exception=False)
    if kind == "404":
        return client.get("/no-such-page/")
    if kind == "500":
        monkeypatch.setattr(account_views, "render", _boom)
        client.force_login(user)
        return client.post("/api-tokens/", {"name": "laptop", "expires": ""}, headers={"Accept": "text/html"})
    if kind == "403-csrf":
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client.post("/api-tokens/", {"name": "laptop", "expires": ""})
    if kind == "400-host":
        # Refused by SecurityMiddleware's HTTPS redirect, before the view middleware runs.
        settings.SECURE_SSL_REDIRECT = True
        return client.get("/", headers={"Host": "evil.example"})
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["404", "500", "403-csrf", "400-host"])
def test_error_responses_carry_the_content_security_policy(user, settings, monkeypatch, kind):
    settings.DEBUG = False
    response = _error_response(kind, user, settings, monkeypatch)

    assert response.status_code == int(kind[:3])
    policy = _policy(response)
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"


@pytest.mark.parametrize("kind", ["404", "500", "403-csrf", "400-host"])
def test_debug_error_pages_carry_the_policy_with_only_inline_code_allowed_in_addition(user, settings, monkeypatch, kind):
    settings.DEBUG = True
    response = _error_response(kind, user, settings, monkeypatch)

    assert response.status_code == int(kind[:3])
    policy = _policy(response)
    # Django's DEBUG pages style and script themselves inline; nothing else is loosened.
    assert policy["script-src"] == "'self' 'unsafe-inline'" and policy["style-src"] == "'self' 'unsafe-inline'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert policy["connect-src"] == "'self'" and policy["form-action"] == "'self'"
