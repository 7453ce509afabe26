"""URLs that Django serves. ACME is routed ahead of Django, in asgi.py."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("pki_server.dashboard.urls")),
    path("", include("pki_server.core.urls")),
]

# The dashboard's 403 and 404 pages under /dashboard/; Django's own everywhere else.
handler403 = "pki_server.dashboard.views.errors.permission_denied"
handler404 = "pki_server.dashboard.views.errors.page_not_found"
