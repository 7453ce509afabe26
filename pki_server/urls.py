"""URLs that Django serves. ACME is routed ahead of Django, in asgi.py."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("pki_server.dashboard.urls")),
    path("", include("pki_server.core.urls")),
]
