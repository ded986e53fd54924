import pytest
from django.contrib.auth import get_user_model
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
