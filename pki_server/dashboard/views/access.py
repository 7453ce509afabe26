"""Who may use the dashboard: signed-in staff, with the same model permissions as in the admin.

Anonymous visitors are sent to the login page (with ``?next=``); signed-in users who are not
staff, or lack a permission, get 403 (a redirect would loop: they are signed in already). The 403
carries what is missing (:class:`DashboardAccessDenied`): the dashboard's 403 page (views/errors.py)
says which permission to ask for.
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

#: What each permission lets a user do in the dashboard, in the words of the 403 page.
ABILITIES = {
    VIEW_CA: "view certificate authorities",
    VIEW_CERTIFICATE: "view certificates",
    CHANGE_CERTIFICATE: "revoke certificates",
    VIEW_ACCOUNT: "view ACME accounts",
    CHANGE_ACCOUNT: "deactivate ACME accounts",
}


class DashboardAccessDenied(PermissionDenied):
    """A signed-in user may not use this page: not active staff, or ``missing`` permissions."""

    def __init__(self, *, not_staff: bool = False, missing: tuple[str, ...] = ()) -> None:
        self.not_staff = not_staff
        self.missing = missing
        if not_staff:
            message = "The dashboard is for active staff users."
        else:
            message = "Missing permission: " + ", ".join(missing) + "."
        super().__init__(message)


def staff_required(*permissions: str) -> Callable[[View], View]:
    """Only active staff users holding every one of ``permissions`` reach the view."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not (user.is_active and user.is_staff):
                raise DashboardAccessDenied(not_staff=True)
            missing = tuple(permission for permission in permissions if not user.has_perm(permission))
            if missing:
                raise DashboardAccessDenied(missing=missing)
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
