"""API tokens: created with the secret shown once and only its hash stored, checked in
constant time, refused once revoked or expired; the tokens page and the staff admin."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import (
    DEFAULT_LIFETIME,
    LAST_USED_RESOLUTION,
    api_token_authenticate,
    api_token_create,
    api_token_revoke,
    bearer_token,
)
from chat.tests.factories import UserFactory
from config.errors import AppError

PASSWORD = "correct horse battery staple"  # UserFactory's

pytestmark = pytest.mark.django_db


def test_created_token_has_the_documented_shape_and_only_its_hash_is_stored(user):
    created = api_token_create(owner=user, name="  laptop script ")

    scheme, prefix, secret = created.secret.split("_", 2)
    assert scheme == "ac" and prefix == created.token.prefix and len(prefix) == 10 and len(secret) >= 40
    token = ApiToken.objects.get(pk=created.token.pk)
    assert token.name == "laptop script" and token.owner == user
    assert token.token_hash == hashlib.sha256(created.secret.encode()).hexdigest()
    # Neither the token nor its secret part is in any column of the row.
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert not any(secret in str(value) or created.secret in str(value) for value in row.values())


def test_valid_token_authenticates_its_owner_and_records_last_use(user):
    created = api_token_create(owner=user, name="ci")
    assert created.token.last_used_at is None

    assert api_token_authenticate(raw=created.secret) == user
    first_use = ApiToken.objects.get(pk=created.token.pk).last_used_at
    assert first_use is not None

    # Within the resolution a second use does not write again; after it, it does.
    assert api_token_authenticate(raw=created.secret) == user
    assert ApiToken.objects.get(pk=created.token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=created.token.pk).update(last_used_at=first_use - LAST_USED_RESOLUTION * 2)
    assert api_token_authenticate(raw=created.secret) == user
    assert ApiToken.objects.get(pk=created.token.pk).last_used_at > first_use - LAST_USED_RESOLUTION


def test_revoked_expired_unknown_and_malformed_tokens_are_refused(user):
    revoked = api_token_create(owner=user, name="old")
    api_token_revoke(token=revoked.token)
    expired = api_token_create(owner=user, name="short", expires_at=timezone.now() - timedelta(seconds=1))
    good = api_token_create(owner=user, name="good")
    wrong_secret = f"ac_{good.token.prefix}_{'x' * 43}"
    unknown_prefix = "ac_0123456789_" + good.secret.split("_", 2)[2]

    for raw in (revoked.secret, expired.secret, wrong_secret, unknown_prefix, "", "ac__", "bearer", good.secret.upper()):
        assert api_token_authenticate(raw=raw) is None, raw
    assert ApiToken.objects.get(pk=revoked.token.pk).last_used_at is None
    assert api_token_authenticate(raw=good.secret) == user


def test_token_of_a_deactivated_user_is_refused(user):
    created = api_token_create(owner=user, name="x")
    user.is_active = False
    user.save()
    assert api_token_authenticate(raw=created.secret) is None


def test_revoking_twice_keeps_the_first_revocation_time(user):
    created = api_token_create(owner=user, name="x")
    first = api_token_revoke(token=created.token).revoked_at
    assert api_token_revoke(token=created.token).revoked_at == first


def test_minting_past_the_cap_of_live_tokens_is_refused_and_revoked_or_expired_ones_do_not_count(user, other_user, settings):
    settings.API_TOKENS_PER_USER = 3
    first, _, _ = (api_token_create(owner=user, name=f"t{n}") for n in range(3))
    with pytest.raises(AppError) as refused:
        api_token_create(owner=user, name="fourth")
    assert refused.value.code == "too_many_tokens" and refused.value.http_status == 409
    assert "3 active API tokens" in refused.value.message and "revoke one" in refused.value.message
    assert ApiToken.objects.for_user(user).count() == 3
    api_token_create(owner=other_user, name="theirs")  # the cap is per user

    api_token_revoke(token=first.token)
    ApiToken.objects.filter(owner=user, name="t1").update(expires_at=timezone.now() - timedelta(seconds=1))
    api_token_create(owner=user, name="fourth")
    api_token_create(owner=user, name="fifth")
    assert ApiToken.objects.for_user(user).usable().count() == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), ("Bearer ", None), (None, None)],
)
def test_bearer_header_parsing(header, expected):
    assert bearer_token(header) == expected


# --- the page ------------------------------------------------------------------------
def test_tokens_page_shows_a_new_token_once_and_lists_only_own_tokens(client, user, other_user):
    api_token_create(owner=other_user, name="someone else's")
    client.force_login(user)

    response = client.post(reverse("accounts:api_tokens"), {"name": "my script", "expires": "30", "password": PASSWORD})
    assert response.status_code == 200 and response["Cache-Control"].startswith("max-age=0")
    page = response.content.decode()
    token = ApiToken.objects.get(owner=user)
    secret = response.context["created"].secret
    assert secret in page and token.prefix in page and "shown only this once" in page
    assert token.expires_at is not None and token.expires_at > timezone.now() + timedelta(days=29)

    again = client.get(reverse("accounts:api_tokens")).content.decode()
    assert secret not in again and secret.split("_", 2)[2] not in again
    assert "my script" in again and f"ac_{token.prefix}_" in again and "never" in again  # never used
    assert "someone else" not in again


def test_tokens_page_needs_sign_in_and_a_name(client, user):
    assert client.get(reverse("accounts:api_tokens")).status_code == 302
    client.force_login(user)
    response = client.post(reverse("accounts:api_tokens"), {"name": "", "expires": "90", "password": PASSWORD})
    assert response.status_code == 400 and not ApiToken.objects.exists()


def test_tokens_page_refuses_a_token_past_the_cap_with_a_form_error(client, user, settings):
    settings.API_TOKENS_PER_USER = 1
    api_token_create(owner=user, name="only")
    client.force_login(user)

    response = client.post(reverse("accounts:api_tokens"), {"name": "one more", "expires": "30", "password": PASSWORD})

    assert response.status_code == 400 and response.context["created"] is None
    assert "1 active API token, the most allowed" in response.content.decode()
    assert list(ApiToken.objects.for_user(user).values_list("name", flat=True)) == ["only"]


def test_minting_on_the_page_needs_the_account_password_and_a_wrong_one_mints_nothing(client, user):
    client.force_login(user)
    assert 'type="password" name="password"' in client.get(reverse("accounts:api_tokens")).content.decode()

    wrong = client.post(reverse("accounts:api_tokens"), {"name": "stolen session", "expires": "90", "password": "nope"})
    missing = client.post(reverse("accounts:api_tokens"), {"name": "stolen session", "expires": "90"})

    assert wrong.status_code == 400 and wrong.context["created"] is None
    assert "That is not your password; no token was created." in wrong.content.decode()
    assert 'value="nope"' not in wrong.content.decode()  # the password is not echoed back
    assert missing.status_code == 400 and missing.context["form"].errors["password"]
    assert not ApiToken.objects.exists()
    right = client.post(reverse("accounts:api_tokens"), {"name": "me", "expires": "90", "password": PASSWORD})
    assert right.status_code == 200 and ApiToken.objects.filter(owner=user).count() == 1


def test_new_tokens_expire_in_90_days_unless_never_is_chosen_explicitly(client, user):
    made = api_token_create(owner=user, name="default").token
    assert abs(made.expires_at - (timezone.now() + DEFAULT_LIFETIME)) < timedelta(minutes=1)
    assert DEFAULT_LIFETIME.days == 90
    assert api_token_create(owner=user, name="forever", never_expires=True).token.expires_at is None

    client.force_login(user)
    page = client.get(reverse("accounts:api_tokens")).content.decode()
    assert '<option value="90" selected>' in page and '<option value="never">Never</option>' in page
    # No choice is not "never": the form asks again.
    assert client.post(reverse("accounts:api_tokens"), {"name": "x", "expires": "", "password": PASSWORD}).status_code == 400
    for choice, days in (("30", 30), ("365", 365), ("never", None)):
        client.post(reverse("accounts:api_tokens"), {"name": choice, "expires": choice, "password": PASSWORD})
        token = ApiToken.objects.get(owner=user, name=choice)
        if days is None:
            assert token.expires_at is None
        else:
            assert abs(token.expires_at - (timezone.now() + timedelta(days=days))) < timedelta(minutes=1)


def test_revoke_needs_post_with_csrf_and_only_reaches_own_tokens(user, other_user):
    mine = api_token_create(owner=user, name="mine").token
    theirs = api_token_create(owner=other_user, name="theirs").token
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    assert client.get(reverse("accounts:api_token_revoke", args=[mine.pk])).status_code == 405
    assert client.post(reverse("accounts:api_token_revoke", args=[mine.pk])).status_code == 403  # no CSRF token
    client.get(reverse("accounts:api_tokens"))
    csrf = client.cookies["csrftoken"].value
    assert client.post(reverse("accounts:api_token_revoke", args=[theirs.pk]), {"csrfmiddlewaretoken": csrf}).status_code == 404
    response = client.post(reverse("accounts:api_token_revoke", args=[mine.pk]), {"csrfmiddlewaretoken": csrf})
    assert response.status_code == 302

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None
    assert "revoked" in client.get(reverse("accounts:api_tokens")).content.decode()


def test_nav_links_to_the_tokens_page(client, user):
    client.force_login(user)
    page = client.get(reverse("chat:conversation_list")).content.decode()
    assert f'href="{reverse("accounts:api_tokens")}">API tokens<' in page


# --- admin ---------------------------------------------------------------------------
def test_staff_list_tokens_read_only_and_revoke_them(client, user):
    staff = UserFactory(is_staff=True, is_superuser=True)
    created = api_token_create(owner=user, name="laptop")
    client.force_login(staff)

    listing = client.get(reverse("admin:accounts_apitoken_changelist"))
    assert listing.status_code == 200 and "laptop" in listing.content.decode()
    assert created.secret.split("_", 2)[2] not in listing.content.decode()
    detail = client.get(reverse("admin:accounts_apitoken_change", args=[created.token.pk])).content.decode()
    assert created.token.token_hash not in detail and 'name="name"' not in detail  # read-only, hash hidden
    assert client.get(reverse("admin:accounts_apitoken_add")).status_code == 403

    response = client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [created.token.pk]},
    )
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=created.token.pk).revoked_at is not None
    assert api_token_authenticate(raw=created.secret) is None


def test_non_staff_cannot_see_tokens_in_admin(client, user):
    client.force_login(user)
    assert client.get(reverse("admin:accounts_apitoken_changelist")).status_code == 302


# --- a new password ends the tokens of the old one -----------------------------------
NEW_PASSWORD = "a brand new passphrase 42"


def _usable_tokens(user) -> list[str]:
    return list(ApiToken.objects.for_user(user).usable().values_list("name", flat=True))


def test_changing_the_password_on_the_account_page_revokes_every_token_of_the_user(client, user, other_user):
    api_token_create(owner=user, name="laptop")
    api_token_create(owner=user, name="ci", never_expires=True)
    api_token_create(owner=other_user, name="theirs")
    client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert len(_usable_tokens(user)) == 2  # signing in is not a new password

    response = client.post(
        reverse("account_change_password"), {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )

    assert response.status_code == 302
    assert _usable_tokens(user) == [] and ApiToken.objects.filter(owner=user, revoked_at__isnull=False).count() == 2
    assert _usable_tokens(other_user) == ["theirs"]


def test_resetting_the_password_by_email_revokes_every_token_of_the_user(client, user, mailoutbox):
    created = api_token_create(owner=user, name="laptop")
    client.post(reverse("account_reset_password"), {"email": user.email})
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", mailoutbox[0].body).group(1)
    form = client.get(link, follow=True)

    response = client.post(form.redirect_chain[-1][0], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert _usable_tokens(user) == [] and api_token_authenticate(raw=created.secret) is None


def test_staff_setting_a_password_in_admin_revokes_the_users_tokens(client, user):
    staff = UserFactory(is_staff=True, is_superuser=True)
    api_token_create(owner=user, name="laptop")
    api_token_create(owner=staff, name="staff's own")
    client.force_login(staff)

    response = client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302
    assert _usable_tokens(user) == [] and _usable_tokens(staff) == ["staff's own"]
