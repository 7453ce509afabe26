"""What the lean ASGI endpoints (ACME, OCSP/CRL) read from a request's scope, in one place.

The ASGI types they share, a request header by name, and Django's Host check against
``ALLOWED_HOSTS`` — remembered per Host value and setting, because Django's lazily compiled
host pattern cost more than the rest of routing a request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str:
    """The first header called ``name`` (lower-case bytes, as ASGI gives them), or ""."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def host_allowed(host: str) -> bool:
    """Whether ``host`` (``name[:port]``) is one this server answers for, as Django decides it."""
    return _host_allowed(host, tuple(settings.ALLOWED_HOSTS))


@lru_cache(maxsize=256)
def _host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)
