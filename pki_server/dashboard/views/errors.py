"""403 and 404 pages under /dashboard/ in the dashboard's look; elsewhere (admin, CRLs ...) Django's own.

pki_server/urls.py names these as Django's ``handler403`` and ``handler404``, so they serve whatever
PKI_DEBUG says (with PKI_DEBUG on, Django shows its technical 404 page instead, as everywhere).
"""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404
from django.views import defaults

from pki_server.dashboard.views.access import ABILITIES, DashboardAccessDenied

PREFIX = "/dashboard/"


def _in_dashboard(request: HttpRequest) -> bool:
    return request.path_info.startswith(PREFIX)


def _permission_labels(names: tuple[str, ...]) -> list[str]:
    """The permissions as the admin's user form lists them ("ACME | ACME account | Can view ACME account")."""
    query = Q(pk__in=[])
    for name in names:
        app_label, _, codename = name.partition(".")
        query |= Q(content_type__app_label=app_label, codename=codename)
    found = {
        f"{permission.content_type.app_label}.{permission.codename}": str(permission)
        for permission in Permission.objects.select_related("content_type").filter(query)
    }
    return [found.get(name, name) for name in names]


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _in_dashboard(request):
        return defaults.permission_denied(request, exception)
    context: dict[str, object] = {"not_staff": False, "abilities": [], "permissions": []}
    if isinstance(exception, DashboardAccessDenied):
        context["not_staff"] = exception.not_staff
        context["abilities"] = [ABILITIES.get(name, name) for name in exception.missing]
        context["permissions"] = _permission_labels(exception.missing)
    return render(request, "dashboard/403.html", context, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _in_dashboard(request):
        return defaults.page_not_found(request, exception)
    # The views' own messages ("No certificate has this serial.") are ours to show; the resolver's
    # (the URL patterns tried) is not.
    message = exception.args[0] if exception.args and not isinstance(exception, Resolver404) else None
    return render(request, "dashboard/404.html", {
        "message": message if isinstance(message, str) else None,
        "path": request.path,
    }, status=404)
