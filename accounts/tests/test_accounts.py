import random

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_sign_up_signs_the_user_in_and_lands_on_conversations(client):
    response = client.post(
        reverse("account_signup"),
        {"email": "new@example.com", "password1": "a-long-passphrase-42", "password2": "a-long-passphrase-42"},
    )
    assert response.status_code == 302 and response["Location"] == reverse("chat:conversation_list")
    assert get_user_model().objects.filter(email="new@example.com").exists()
    assert client.get(reverse("chat:conversation_list")).status_code == 200


def test_sign_in_with_email_and_sign_out(client, user):
    response = client.post(reverse("account_login"), {"login": user.email, "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert client.get(reverse("chat:conversation_list")).status_code == 200

    client.post(reverse("account_logout"))
    assert client.get(reverse("chat:conversation_list")).status_code == 302


def test_wrong_password_is_refused(client, user):
    response = client.post(reverse("account_login"), {"login": user.email, "password": "nope"})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_password_change(client, user):
    client.force_login(user)
    response = client.post(
        reverse("account_change_password"),
        {"oldpassword": "correct horse battery staple", "password1": "another-passphrase-77", "password2": "another-passphrase-77"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("another-passphrase-77")


def test_auth_pages_use_the_app_layout(client):
    page = client.get(reverse("account_login")).content.decode()
    assert "Agents Chat" in page and "/static/chat/app.css" in page


def test_demo_user_command_prints_the_login(settings):
    from io import StringIO

    from django.core.management import call_command

    settings.DEBUG = True
    out = StringIO()
    call_command("ensure_demo_user", stdout=out)
    assert "demo@example.com" in out.getvalue()
    assert get_user_model().objects.get(email="demo@example.com").check_password("demo-password")

    settings.DEBUG = False
    with pytest.raises(Exception, match="DEBUG is off"):
        call_command("ensure_demo_user")


def _sign_up(number: int, *, peer: str, forwarded_for: str | None = None) -> int:
    client = Client(REMOTE_ADDR=peer, **({"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}))
    password = "a-long-passphrase-42"
    response = client.post(
        reverse("account_signup"), {"email": f"limit{number}@example.com", "password1": password, "password2": password}
    )
    return response.status_code


@pytest.fixture
def net(settings) -> str:
    """Three sign-ups per IP, and addresses of this test's own (10.x.y.*): allauth counts in the
    cache, which is Redis on the Postgres run and may hold counts of earlier runs."""
    settings.ACCOUNT_RATE_LIMITS = {"signup": "3/h/ip"}
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}."


def test_without_a_trusted_proxy_a_forwarded_for_header_is_ignored(settings, net):
    settings.TRUSTED_PROXY_COUNT = 0
    statuses = [_sign_up(i, peer=net + "7", forwarded_for=f"203.0.113.{i}") for i in range(6)]
    assert statuses == [302, 302, 302, 429, 429, 429]


def test_behind_one_proxy_the_client_is_the_entry_the_proxy_appended(settings, net):
    settings.TRUSTED_PROXY_COUNT = 1
    # What nginx sends on: the client's made-up entry, then the address nginx saw.
    spoofed = [_sign_up(i, peer=net + "2", forwarded_for=f"203.0.113.{i}, {net}7") for i in range(4)]
    other_client = _sign_up(4, peer=net + "2", forwarded_for=net + "8")
    # A request that did not come through the proxy (no entry) counts against its own peer.
    direct = _sign_up(5, peer=net + "9")
    assert spoofed == [302, 302, 302, 429] and other_client == 302 and direct == 302
    assert get_user_model().objects.filter(email__startswith="limit").count() == 5


def test_two_trusted_proxies_take_the_second_entry_from_the_right(settings, net):
    settings.TRUSTED_PROXY_COUNT = 2
    statuses = [_sign_up(i, peer=net + "2", forwarded_for=f"203.0.113.{i}, {net}7, {net}1") for i in range(4)]
    garbage = _sign_up(4, peer=net + "3", forwarded_for=f"not-an-ip, {net}1")  # counted against the peer
    assert statuses == [302, 302, 302, 429] and garbage == 302
