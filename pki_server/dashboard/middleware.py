"""Secure headers on the pages operators use: the dashboard and the Django admin.

The Content-Security-Policy allows scripts, styles and connections (the live feed's websocket) from
this origin only, so neither inline ``<script>`` nor ``style=""`` attributes run there: the
dashboard's templates have none, and Django 5.2's admin templates have none either. Other paths
(CRLs, OCSP, issuer certificates; ACME is routed ahead of Django) are left as their views make them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
])

SECURE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

#: Where the headers apply (``request.path_info``: the path below any script prefix).
PROTECTED_PREFIXES = ("/dashboard/", "/admin/")

#: Pages are per user and change all the time: no shared or stored copies. Views that say
#: otherwise (Django's never_cache, the PEM downloads' no-store) keep theirs.
CACHE_CONTROL = "private, no-store"


def add_secure_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if request.path_info.startswith(PROTECTED_PREFIXES):
        for name, value in SECURE_HEADERS.items():
            response[name] = value
        if "Cache-Control" not in response:
            response["Cache-Control"] = CACHE_CONTROL
    return response


class SecurityHeadersMiddleware:
    """Adds :data:`SECURE_HEADERS` to responses under :data:`PROTECTED_PREFIXES`; sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        return add_secure_headers(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        assert not isinstance(response, HttpResponseBase)
        return add_secure_headers(request, await response)
