"""Who may use the dashboard: signed-in staff, with the same model permissions as in the admin.

Anonymous visitors are sent to the login page (with ``?next=``); signed-in users who are not
staff, or lack a permission, get 403 (a redirect would loop: they are signed in already).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

View = TypeVar("View", bound=Callable[..., HttpResponse])

VIEW_CA = "pki_core.view_certificateauthority"
VIEW_CERTIFICATE = "pki_core.view_certificate"
CHANGE_CERTIFICATE = "pki_core.change_certificate"
VIEW_ACCOUNT = "pki_acme.view_acmeaccount"
CHANGE_ACCOUNT = "pki_acme.change_acmeaccount"


def staff_required(*permissions: str) -> Callable[[View], View]:
    """Only active staff users holding every one of ``permissions`` reach the view."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not (user.is_active and user.is_staff and user.has_perms(permissions)):
                raise PermissionDenied("The dashboard is for staff users with the permission to see this page.")
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
