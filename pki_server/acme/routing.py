"""URL routing of the ACME handlers (channels' URLRouter, ahead of Django)."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern
from django.urls import path as django_path

from pki_server.acme.handlers.account import AccountHandler, AccountOrdersHandler, KeyChangeHandler, NewAccountHandler
from pki_server.acme.handlers.authorization import AuthorizationHandler, ChallengeHandler
from pki_server.acme.handlers.certificate import CertificateHandler, RevokeCertHandler
from pki_server.acme.handlers.directory import DirectoryHandler, NewNonceHandler
from pki_server.acme.handlers.order import FinalizeHandler, NewOrderHandler, OrderHandler


def path(route: str, app: Any) -> URLPattern:
    """django.urls.path for an ASGI app (URLRouter takes either; django-stubs knows only views)."""
    return django_path(route, app)


urlpatterns = [
    path("acme/directory", DirectoryHandler.as_asgi()),
    path("acme/<str:ca>/directory", DirectoryHandler.as_asgi()),
    path("acme/<str:ca>/new-nonce", NewNonceHandler.as_asgi()),
    path("acme/<str:ca>/new-account", NewAccountHandler.as_asgi()),
    path("acme/<str:ca>/new-order", NewOrderHandler.as_asgi()),
    path("acme/<str:ca>/revoke-cert", RevokeCertHandler.as_asgi()),
    path("acme/<str:ca>/key-change", KeyChangeHandler.as_asgi()),
    path("acme/<str:ca>/acct/<str:slug>", AccountHandler.as_asgi()),
    path("acme/<str:ca>/acct/<str:slug>/orders", AccountOrdersHandler.as_asgi()),
    path("acme/<str:ca>/order/<str:slug>", OrderHandler.as_asgi()),
    path("acme/<str:ca>/order/<str:slug>/finalize", FinalizeHandler.as_asgi()),
    path("acme/<str:ca>/authz/<str:slug>", AuthorizationHandler.as_asgi()),
    path("acme/<str:ca>/chall/<str:slug>", ChallengeHandler.as_asgi()),
    path("acme/<str:ca>/cert/<str:slug>", CertificateHandler.as_asgi()),
]
