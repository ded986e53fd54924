"""When a credential ends, the connections it authenticated end too (`accounts.credentials`):
signing out ends that session's sockets and streams; a new password ends the user's browser
connections; deactivating a user ends all of theirs.

A password changed or reset through the account pages (allauth's `password_changed` and
`password_reset`) also revokes the user's API tokens, closing their sockets and streams: a token
minted by whoever knew the old password must not outlive it. (Staff setting a password in admin
does the same, in `accounts.admin`.) A hash upgrade at sign-in changes the stored hash, not the
password, and sends neither signal."""

from __future__ import annotations

from allauth.account.signals import password_changed, password_reset
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from accounts.credentials import browser_group, revoke, session_group, user_group
from accounts.services import api_tokens_revoke_all

User = get_user_model()


@receiver(user_logged_out)
def close_connections_of_the_session(sender, request, user, **kwargs) -> None:
    # Sent before the session is flushed: its key is still the one the sockets were opened with.
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        revoke(session_group(key), reason="signed_out")


@receiver(password_changed)
@receiver(password_reset)
def revoke_api_tokens_of_a_new_password(sender, request, user, **kwargs) -> None:
    api_tokens_revoke_all(owner=user, reason="password_changed")


@receiver(pre_save, sender=User)
def _remember_what_authenticates(sender, instance, update_fields=None, **kwargs) -> None:
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        instance._credentials_before = None  # e.g. `last_login` on every sign-in: nothing to compare
        return
    instance._credentials_before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()


@receiver(post_save, sender=User)
def close_connections_of_a_changed_user(sender, instance, created, **kwargs) -> None:
    before = getattr(instance, "_credentials_before", None)
    if created or not before:
        return
    if before["is_active"] and not instance.is_active:
        revoke(user_group(instance.pk), reason="deactivated")
    elif before["password"] != instance.password:
        revoke(browser_group(instance.pk), reason="password_changed")
