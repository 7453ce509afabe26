"""The ASGI application that uvicorn serves.

channels routes each connection by protocol: HTTP goes to Django (the admin, published CA
resources), with the lean ACME handlers to be routed ahead of it.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pki_server.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_application = ASGIStaticFilesHandler(get_asgi_application())

application = ProtocolTypeRouter({"http": django_application})
