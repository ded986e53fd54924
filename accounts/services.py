"""API tokens: creating, revoking and checking the bearer tokens of non-browser clients.

A token reads `ac_<prefix>_<secret>`: `prefix` (10 hex characters) is public and finds the row,
`secret` (43 URL-safe characters, 256 bits) proves possession. Only the SHA-256 of the whole
token is stored. The secret has full entropy, so a plain hash is enough (no salt or slow hash
needed), and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.credentials import revoke, token_group
from accounts.models import ApiToken
from config.errors import AppError

TOKEN_SCHEME = "ac"
PREFIX_BYTES = 5  # 10 hex characters
SECRET_BYTES = 32
# How long a token lives unless its creator picks another lifetime (or, explicitly, none).
DEFAULT_LIFETIME = timedelta(days=90)
# last_used_at is written at most this often per token: a busy client must not turn every
# request into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    # The only time the full token exists outside the client: show it once, never store it
    # (nor print it: not in its repr, so not on an error page either).
    secret: str = field(repr=False)


@sensitive_variables("raw")
def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@sensitive_variables("raw")
@transaction.atomic
def api_token_create(
    *, owner: AbstractBaseUser, name: str, expires_at: datetime | None = None, never_expires: bool = False
) -> CreatedToken:
    """A new token, expiring at `expires_at` (default: DEFAULT_LIFETIME from now; a token that
    never expires must be asked for with `never_expires=True`), or AppError("too_many_tokens")
    when the owner already holds
    API_TOKENS_PER_USER live ones (the request rate is per user, but an unbounded number of
    live secrets is still an unbounded number of things to leak)."""
    cap = settings.API_TOKENS_PER_USER
    if cap:
        # The owner's row is the lock: two mints at once cannot both take the last place.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if ApiToken.objects.for_user(owner).usable().count() >= cap:
            raise AppError(
                "too_many_tokens",
                f"You already have {cap} active API token{'s' if cap != 1 else ''}, the most allowed; "
                "revoke one you no longer need first.",
            )
    if never_expires:
        expires_at = None
    elif expires_at is None:
        expires_at = timezone.now() + DEFAULT_LIFETIME
    prefix = secrets.token_hex(PREFIX_BYTES)
    while ApiToken.objects.filter(prefix=prefix).exists():  # 40 bits: practically never
        prefix = secrets.token_hex(PREFIX_BYTES)
    raw = f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    token = ApiToken(owner=owner, name=name.strip(), prefix=prefix, token_hash=hash_token(raw), expires_at=expires_at)
    token.full_clean()
    token.save()
    return CreatedToken(token=token, secret=raw)


@transaction.atomic
def api_token_revoke(*, token: ApiToken, reason: str = "token_revoked") -> ApiToken:
    """Revoke a token (idempotent: the first revocation time stays)."""
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        # Sockets and streams opened with it close too, on every process.
        revoke(token_group(locked.pk), reason=reason)
    token.revoked_at = locked.revoked_at
    return locked


@transaction.atomic
def api_tokens_revoke_all(*, owner: AbstractBaseUser, reason: str) -> int:
    """Revoke every usable token of `owner` (after a new password: whoever stole the old one
    may have minted tokens with it). Returns how many were revoked."""
    tokens = list(ApiToken.objects.for_user(owner).usable())
    for token in tokens:
        api_token_revoke(token=token, reason=reason)
    return len(tokens)


@sensitive_variables("raw", "parts")
def split_token(raw: str) -> str | None:
    """The prefix of a well-formed token, else None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_SCHEME or not parts[2]:
        return None
    prefix = parts[1]
    if len(prefix) != PREFIX_BYTES * 2 or any(c not in "0123456789abcdef" for c in prefix):
        return None
    return prefix


@sensitive_variables("raw")
def api_token_authenticate(*, raw: str) -> AbstractBaseUser | None:
    """The active owner of a usable token, else None (unknown, malformed, revoked, expired,
    or an inactive user: all look the same to the client). Records when it was last used."""
    token = api_token_for(raw=raw)
    return token.owner if token is not None else None


@sensitive_variables("raw")
def api_token_for(*, raw: str) -> ApiToken | None:
    """`api_token_authenticate`, returning the token (with its `owner`)."""
    prefix = split_token(raw)
    if prefix is None:
        return None
    now = timezone.now()
    token = ApiToken.objects.usable(now=now).select_related("owner").filter(prefix=prefix).first()
    # Compare even when there is no row, so a miss and a wrong secret take the same time.
    expected = token.token_hash if token is not None else hash_token("")
    if not hmac.compare_digest(expected, hash_token(raw)) or token is None:
        return None
    if not token.owner.is_active:
        return None
    # No write within LAST_USED_RESOLUTION (the row just read says so, without a statement);
    # past it, a conditional update, so parallel requests do not lose a race.
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return token


@sensitive_variables("authorization", "value")
def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
