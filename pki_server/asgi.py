"""The ASGI application that uvicorn serves.

channels routes each connection by protocol. HTTP requests to ``/acme/...`` go to the lean ACME
handlers (raw ASGI apps: no middleware, one database hop per request), OCSP, CRLs and issuer
certificates to the CA's lean publication endpoints (core/endpoints.py); everything else goes to
Django (the admin, the dashboard, the CA's published certificates). Websockets go to the dashboard's
live feed, behind an Origin check (ALLOWED_HOSTS) and the Django session of the dashboard's login.
Every HTTP request gets a line in the access log when ``serve`` turns it on (pki_server/accesslog.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pki_server.settings")

import django

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import re_path  # noqa: E402

from pki_server.accesslog import logged  # noqa: E402
from pki_server.acme.routing import urlpatterns as acme_urlpatterns  # noqa: E402
from pki_server.core.endpoints import urlpatterns as publication_urlpatterns  # noqa: E402
from pki_server.dashboard.routing import websocket_urlpatterns  # noqa: E402

django_application = ASGIStaticFilesHandler(get_asgi_application())

http_routes = [*acme_urlpatterns, *publication_urlpatterns, re_path(r"", django_application)]  # type: ignore[arg-type]

application = ProtocolTypeRouter({
    "http": logged(URLRouter(http_routes)),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
