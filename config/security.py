"""Browser-side protections that need code, not just settings."""

from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware with `CONTENT_SECURITY_POLICY` everywhere, except that admin
    pages may also use inline styles: the admin templates of this project position trace bars
    and indent spans with `style` attributes (templates/admin/…). Scripts stay 'self' only."""

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith("/admin/"):
            parts.update = {**(parts.update or {}), "style-src": [UNSAFE_INLINE]}
        return parts
