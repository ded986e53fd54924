"""What authenticated a long-lived connection, and the end of it.

A socket or an SSE stream outlives the request that authenticated it. A `Credential` names what
authenticated it: an API token, or a browser session. When that ends (the token is revoked or
expires, the user signs out of that session, changes their password, or is deactivated) every
connection it authenticated is closed with 4401 within seconds, on every process:

* at once, by a message to the credential's channel-layer groups, sent after the change
  commits (`revoke`; the signals in `accounts.signals` and `services.api_token_revoke` call it);
* and by a recheck (`Credential.is_valid`) every `AUTH_RECHECK_SECONDS` and before frames that
  act, which also covers processes that share no channel layer and tokens that simply expire.

A password change closes the user's browser connections (the session that changed it signs in
again at once: its session hash was updated). A change or reset through the account pages, or
staff setting it in admin, also revokes the user's API tokens (`services.api_tokens_revoke_all`),
which closes theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken

log = logging.getLogger(__name__)

REVOKED = "auth.revoked"  # the channel-layer message type; consumers handle it as `auth_revoked`


def user_group(user_id: int) -> str:
    return f"auth.user.{user_id}"


def browser_group(user_id: int) -> str:
    return f"auth.browser.{user_id}"


def token_group(token_id: int) -> str:
    return f"auth.token.{token_id}"


def session_group(session_key: str) -> str:
    # A digest: the session key itself is a credential and must not be copied into Redis.
    return f"auth.session.{hashlib.sha256(session_key.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class Credential:
    user_id: int
    token_id: int | None = None
    session_key: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def of_token(cls, token: ApiToken) -> Credential:
        return cls(user_id=token.owner_id, token_id=token.pk, expires_at=token.expires_at)

    @classmethod
    def of_session(cls, user, session) -> Credential | None:
        key = getattr(session, "session_key", None)
        return cls(user_id=user.pk, session_key=key) if key else None

    @property
    def groups(self) -> list[str]:
        """The groups whose `auth.revoked` message ends connections made with this credential."""
        if self.token_id is not None:
            return [user_group(self.user_id), token_group(self.token_id)]
        groups = [user_group(self.user_id), browser_group(self.user_id)]
        if self.session_key:
            groups.append(session_group(self.session_key))
        return groups

    def is_valid(self) -> bool:
        """Still good: the user is active and the token usable, or the session still signs this
        user in (it exists and carries the user's current password hash)."""
        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        if user is None:
            return False
        if self.token_id is not None:
            return ApiToken.objects.usable().filter(pk=self.token_id, owner_id=self.user_id).exists()
        if not self.session_key:
            return False
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=self.session_key)
        data = store.load()  # an expired or deleted session loads as empty
        if str(data.get(SESSION_KEY)) != str(self.user_id):
            return False
        return hmac.compare_digest(str(data.get(HASH_SESSION_KEY, "")), user.get_session_auth_hash())

    def seconds_left(self) -> float | None:
        """Until the token expires (None: it does not)."""
        if self.expires_at is None:
            return None
        return max((self.expires_at - timezone.now()).total_seconds(), 0.0)


def revoke(*groups: str, reason: str) -> None:
    """Close every connection in `groups`, on every process, once the current transaction
    commits (at once outside one)."""
    def send() -> None:
        layer = get_channel_layer()
        for group in groups:
            try:
                async_to_sync(layer.group_send)(group, {"type": REVOKED, "reason": reason})
            except Exception as exc:  # the layer is down: the periodic recheck still closes them
                log.warning("could not tell connections in %s to close (%r)", group, exc)

    transaction.on_commit(send)
