"""API-token authentication for the chat socket.

The browser path's Origin check (`config.security.CsrfOriginValidator`) refuses (403) every
handshake without an `Origin` header, and non-browser clients usually send none. So the
token path cannot sit inside the validator; it sits in front of it and splits handshakes:

* `Authorization: Bearer <token>`: the token alone decides who the user is (a valid token: its
  owner; anything else: anonymous, so the consumer closes with 4401 like any anonymous socket).
  The session cookie is ignored and the Origin is not checked. That is safe because a browser
  page cannot set headers on a WebSocket handshake and never adds a Bearer one by itself (it
  may replay cached Basic credentials, which take the browser path), so such a handshake is
  never a cross-site page riding on the user's cookies; and the token is an explicit secret,
  not an ambient credential.
* anything else: the browser path, unchanged: the Origin must be one CSRF would accept, then
  the session authenticates (`CsrfOriginValidator(AuthMiddlewareStack(...))`).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.views.decorators.debug import sensitive_variables

from accounts.credentials import Credential
from accounts.services import api_token_for, bearer_token


@sensitive_variables("value")
def authorization_header(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            try:
                return value.decode("latin1")
            except UnicodeDecodeError:
                return None
    return None


@database_sync_to_async
@sensitive_variables("raw")
def user_for_token(raw: str):
    token = api_token_for(raw=raw)
    return (token.owner, Credential.of_token(token)) if token is not None else (AnonymousUser(), None)


class BearerTokenAuthMiddleware:
    """`BearerTokenAuthMiddleware(app, otherwise=CsrfOriginValidator(AuthMiddlewareStack(app)))`:
    handshakes with a bearer token reach `app` authenticated by the token alone; all others go
    through `otherwise` (see the module docstring)."""

    def __init__(self, app, *, otherwise) -> None:
        self.app = app
        self.otherwise = otherwise

    @sensitive_variables("raw")
    async def __call__(self, scope, receive, send):
        raw = bearer_token(authorization_header(scope)) if scope["type"] == "websocket" else None
        if raw is None:
            return await self.otherwise(scope, receive, send)
        user, credential = await user_for_token(raw)
        return await self.app({**scope, "user": user, "credential": credential}, receive, send)
