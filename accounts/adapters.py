"""allauth customised through its adapter (allauth `docs/common/templates.rst`)."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from config.ratelimits import client_ip


class AccountAdapter(DefaultAccountAdapter):
    def get_client_ip(self, request: HttpRequest) -> str:
        """The sign-up limit per IP counts the address `config.ratelimits.client_ip` resolves
        (TRUSTED_PROXY_COUNT), not allauth's own reading of `X-Forwarded-For`."""
        ip = client_ip(request)
        if not ip:
            raise PermissionDenied("Unable to determine client IP address")
        return ip
