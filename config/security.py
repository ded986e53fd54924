"""Browser-side protections that need code, not just settings."""

from __future__ import annotations

import io
from dataclasses import asdict
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from csp.constants import HEADER, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from csp.utils import build_policy
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http.request import is_same_domain

# The statuses django-csp leaves without a policy in DEBUG (csp.middleware.CSPMiddleware).
DJANGO_CSP_DEBUG_EXEMPT = (404, 500)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware with `CONTENT_SECURITY_POLICY` on every response, error pages
    included, except that:

    * admin pages may also use inline styles: the admin templates of this project position
      trace bars and indent spans with `style` attributes (templates/admin/…);
    * in DEBUG, error responses may also use inline script and style: Django's technical 404,
      400 and 500 pages and its CSRF failure page are written that way. django-csp sends no
      policy at all on a DEBUG 404 or 500; here they get the whole policy, loosened only so.

    It sits right after the request-id middleware (settings.MIDDLEWARE), so the responses of
    every other middleware (SecurityMiddleware's 400 for a bad Host, CSRF's 403) and of the
    error handlers (handler404, handler500…) pass through it."""

    def process_response(self, request, response):
        response = super().process_response(request, response)
        skipped = settings.DEBUG and response.status_code in DJANGO_CSP_DEBUG_EXEMPT and HEADER not in response
        if skipped and not getattr(response, "_csp_exempt", False):
            policy = build_policy(**asdict(self.get_policy_parts(request=request, response=response)))
            if policy:
                response[HEADER] = policy
        return response

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if settings.DEBUG and response.status_code >= 400:
            parts.update = {**(parts.update or {}), "script-src": [UNSAFE_INLINE], "style-src": [UNSAFE_INLINE]}
        elif request.path_info.startswith("/admin/"):
            parts.update = {**(parts.update or {}), "style-src": [UNSAFE_INLINE]}
        return parts


class CsrfOriginValidator:
    """The socket's Origin check, the one Django's CSRF check applies to a form post: a browser
    handshake is let through only when its `Origin` is the request's own origin (scheme, host
    and port: `https` when `request.is_secure()`, then `request.get_host()`, which must be in
    `ALLOWED_HOSTS`) or is listed in `CSRF_TRUSTED_ORIGINS` (`https://*.example.com` for
    subdomains). Anything else, no `Origin` included, is refused with 403 at the handshake.

    Channels' `AllowedHostsOriginValidator` compares the host alone against `ALLOWED_HOSTS`:
    a page on another port of the host, or on any sibling subdomain when `ALLOWED_HOSTS` holds
    `.example.com`, could open a socket with the user's cookies while CSRF refused the same
    origin a form (`CsrfViewMiddleware._origin_verified` is the reference)."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("CsrfOriginValidator only guards WebSocket handshakes")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def origin_allowed(scope: dict) -> bool:
    origins = [value for name, value in scope.get("headers", []) if name.lower() == b"origin"]
    if len(origins) != 1:
        return False
    try:
        origin = origins[0].decode("ascii")
    except UnicodeDecodeError:
        return False
    # The handshake as Django sees a request: the same host validation and the same
    # SECURE_PROXY_SSL_HEADER handling (ws/wss read as http/https).
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "ws"), "http")
    request = ASGIRequest({**scope, "method": "GET", "scheme": scheme}, io.BytesIO())
    try:
        own = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in (o for o in trusted if "*" not in o):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, pattern.netloc.lstrip("*"))
        for pattern in (urlsplit(o) for o in trusted if "*" in o)
        if pattern.scheme == parsed.scheme
    )
