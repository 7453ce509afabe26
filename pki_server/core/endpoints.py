"""Lean ASGI endpoints for what a CA publishes — OCSP, CRLs, issuer certificates — routed by
channels ahead of Django (pki_server/asgi.py), like the ACME handlers.

Django's ASGI handler runs each request's sync code in a thread of its own (a fresh database
connection each time) and through the middleware stack: about 10 ms of CPU for an OCSP response
that takes well under one to make. Here a request is read (its body capped), its work done in one
hop to the database thread (pki_server/dbthread.py: Django's connection hygiene around it, a kept
connection), and the reply of core/publication.py sent. Host names are checked against
ALLOWED_HOSTS as Django does (pki_server/scope.py, shared with the ACME handlers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from django.urls import URLPattern
from django.urls import path as django_path

from pki_server import dbthread
from pki_server.core import publication
from pki_server.core.publication import OCSP_REQUEST_MAX_SIZE, OCSP_REQUEST_TYPE, Reply
from pki_server.scope import Receive, Scope, Send, header, host_allowed


def path(route: str, app: Any, kwargs: dict[str, str] | None = None) -> URLPattern:
    """django.urls.path for an ASGI app (URLRouter takes either; django-stubs knows only views)."""
    return django_path(route, app, kwargs)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (the rest is not kept)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
        if size <= limit:
            chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks) if size <= limit else None


async def _send(send: Send, reply: Reply, method: str) -> None:
    headers = [(b"content-type", reply.content_type.encode("latin-1")),
               *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items())]
    body = b"" if method == "HEAD" or reply.status == 304 else reply.body
    headers.append((b"content-length", str(len(reply.body) if method == "HEAD" else len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _endpoint(methods: tuple[str, ...], handle: Callable[[Scope, str, bytes | None], Awaitable[Reply]],
              ) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if not host_allowed(header(scope, b"host")):
            await _send(send, Reply(400, b"Bad Request: this host is not served here.\n", publication.TEXT), method)
            return
        if method not in methods:
            await _send(send, Reply(405, b"", publication.TEXT, {"Allow": ", ".join(methods)}), method)
            return
        body = await _read_body(receive, OCSP_REQUEST_MAX_SIZE) if method == "POST" else b""
        await _send(send, await handle(scope, method, body), method)

    return app


async def _issuer(scope: Scope, method: str, body: bytes | None) -> Reply:
    return await dbthread.run(publication.issuer_reply, scope["url_route"]["kwargs"]["serial"])


async def _crl(scope: Scope, method: str, body: bytes | None) -> Reply:
    kwargs = scope["url_route"]["kwargs"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    wanted = query.get("format", [kwargs.get("encoding", "der")])[-1]
    return await dbthread.run(publication.crl_reply, kwargs["serial"], wanted, header(scope, b"if-none-match"),
                              header(scope, b"if-modified-since"))


async def _ocsp(scope: Scope, method: str, body: bytes | None) -> Reply:
    kwargs = scope["url_route"]["kwargs"]
    encoded = kwargs.get("encoded")
    if method == "POST":
        content_type = header(scope, b"content-type").split(";")[0].strip().lower()
        der = body if encoded is None and content_type == OCSP_REQUEST_TYPE and body else None
    else:
        der = publication.ocsp_request_from_path(encoded) if encoded is not None else None
    return await dbthread.run(publication.ocsp_reply, method, kwargs["serial"], der)


_SAFE = ("GET", "HEAD")
_ocsp_app = _endpoint(("GET", "HEAD", "POST"), _ocsp)
_crl_app = _endpoint(_SAFE, _crl)

#: For channels' URLRouter: the same paths as core/urls.py.
urlpatterns = [
    path("issuers/<str:serial>.der", _endpoint(_SAFE, _issuer)),
    path("crl/<str:serial>.crl", _crl_app, {"encoding": "der"}),
    path("crl/<str:serial>.pem", _crl_app, {"encoding": "pem"}),
    path("ocsp/<str:serial>/", _ocsp_app),
    path("ocsp/<str:serial>/<path:encoded>", _ocsp_app),
]
