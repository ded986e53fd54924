"""Error pages and error reports never show an API token (`DEFAULT_EXCEPTION_REPORTER_FILTER`).

Django's own filter hides `sensitive_variables`/`sensitive_post_parameters` only when DEBUG is
off, on the grounds that a DEBUG site is not safe anyway. But a DEBUG error page is exactly
where a developer pastes a traceback from, and a bearer token on it is a live credential. So
this filter is always active, hides the Authorization header, and replaces any frame variable
whose value shows a token (the caller's or one in the `ac_<prefix>_<secret>` format) even
where no one thought to mark it.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

from accounts.services import PREFIX_BYTES, TOKEN_SCHEME, bearer_token

TOKEN_PATTERN = re.compile(rf"{TOKEN_SCHEME}_[0-9a-f]{{{PREFIX_BYTES * 2}}}_[A-Za-z0-9_-]{{8,}}")
HIDDEN_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION")


class TokenSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    def is_active(self, request) -> bool:
        return True  # marked variables and POST parameters are hidden in DEBUG too

    def get_safe_request_meta(self, request) -> dict[str, Any]:
        meta = super().get_safe_request_meta(request)
        for name in HIDDEN_HEADERS:
            if name in meta:
                meta[name] = self.cleansed_substitute
        return meta

    def get_traceback_frame_variables(self, request, tb_frame):
        caller = bearer_token(getattr(request, "META", {}).get("HTTP_AUTHORIZATION")) if request is not None else None
        caller = caller if caller and len(caller) >= 16 else None  # too short to tell apart from other text
        return [
            (name, self.cleansed_substitute if _shows_a_token(value, caller) else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def _shows_a_token(value: Any, caller: str | None) -> bool:
    if value == SafeExceptionReporterFilter.cleansed_substitute:
        return False
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a repr that fails is shown as such by Django; nothing to hide here
        return False
    return (caller is not None and caller in text) or TOKEN_PATTERN.search(text) is not None
