"""The dashboard's 403 and 404 pages (views/errors.py, named in pki_server/urls.py), and Django's elsewhere."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.dashboard.middleware import CONTENT_SECURITY_POLICY
from tests.dashboard import pages_fixtures
from tests.dashboard.pages_fixtures import PASSWORD

pytestmark = pytest.mark.django_db

certs = pages_fixtures.certs
staff = pages_fixtures.staff
staff_client = pages_fixtures.staff_client

LOGOUT_FORM = re.compile(r'<form class="logout" method="post" action="/dashboard/logout/">\s*'
                         r'<input type="hidden" name="csrfmiddlewaretoken" value="[^"]+">')
STYLESHEET = '<link rel="stylesheet" href="/static/dashboard/dashboard.css">'
NAV = '<nav aria-label="Dashboard">'


def signed_in(username: str, *codenames: str, is_staff: bool = True) -> Client:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def dashboard_page(response: HttpResponse, status: int) -> str:
    """The response's HTML, after checking it is a dashboard page with the dashboard's headers."""
    assert response.status_code == status
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = response.content.decode()
    assert STYLESHEET in html and '<main>' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # no inline script
    assert not re.search(r"\sstyle=", html)  # no style attribute
    return html


def text(html: str) -> str:
    """The page's words, tags dropped and white space collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_staff_without_permissions_is_told_what_to_ask_for() -> None:
    client = signed_in("bystander")
    html = dashboard_page(client.get(reverse("dashboard:overview")), 403)
    assert LOGOUT_FORM.search(html), html  # a way out: sign out, and in as someone else
    assert NAV in html and '<span class="user">bystander</span>' in html
    words = text(html)
    assert "403 Forbidden" in words
    assert ("Your account bystander has no permission to view certificate authorities, view certificates or view "
            "ACME accounts.") in words, words
    for label in ("Certificate authority | certificate authority | Can view certificate authority",
                  "Certificate authority | certificate | Can view certificate",
                  "ACME | ACME account | Can view ACME account"):
        assert label in words, words
    assert '<a href="/dashboard/">Back to the overview</a>' in html


def test_only_the_missing_permission_is_named(certs: dict[str, Certificate]) -> None:
    client = signed_in("viewer", "view_certificate", "view_certificateauthority", "view_acmeaccount")
    cert = certs["www"]
    html = dashboard_page(client.post(reverse("dashboard:certificate-revoke", args=[cert.serial]),
                                      {"reason": "superseded"}), 403)
    words = text(html)
    assert "Your account viewer has no permission to revoke certificates." in words, words
    assert "Certificate authority | certificate | Can change certificate" in words
    assert "Can view" not in words  # it has those
    cert.refresh_from_db()
    assert not cert.revoked

    words = text(dashboard_page(signed_in("reader", "view_certificate").get(reverse("dashboard:accounts")), 403))
    assert "Your account reader has no permission to view ACME accounts." in words, words


def test_a_signed_in_user_who_is_not_staff_can_sign_out() -> None:
    html = dashboard_page(signed_in("visitor", is_staff=False).get(reverse("dashboard:certificates")), 403)
    assert LOGOUT_FORM.search(html), html
    assert NAV not in html  # its links would all be refused
    assert "is not one" in text(html) and 'href="/dashboard/login/"' in html


def test_404_pages_in_the_dashboard(staff_client: Client, client: Client, intermediate: CertificateAuthority) -> None:
    # A view's own 404: its message is shown.
    html = dashboard_page(staff_client.get(reverse("dashboard:certificate", args=["0BADBAD"])), 404)
    assert LOGOUT_FORM.search(html) and NAV in html
    words = text(html)
    assert "404 Not Found" in words and "No certificate has this serial." in words, words
    assert "Nothing in the dashboard is at /dashboard/certificates/0BADBAD/" in words
    assert dashboard_page(staff_client.get(reverse("dashboard:ca", args=["ABCDEF"])), 404).count(
        "No CA has this serial.") == 1

    # No such URL: the resolver's 404, whose message (the URL patterns tried) is not shown.
    html = dashboard_page(staff_client.get("/dashboard/no-such-page/"), 404)
    assert LOGOUT_FORM.search(html) and "404 Not Found" in html
    assert "tried" not in html and "certificates/&lt;str:serial&gt;" not in html
    assert '<a href="/dashboard/">Back to the overview</a>' in html

    # Not signed in: the same page, without navigation or sign-out, and with the way to sign in.
    html = dashboard_page(client.get("/dashboard/no-such-page/"), 404)
    assert NAV not in html and not LOGOUT_FORM.search(html)
    assert 'href="/dashboard/login/"' in html


def test_other_paths_keep_djangos_pages(staff_client: Client) -> None:
    for response in (staff_client.get("/no-such-page/"), Client().get("/dashboards/")):
        assert response.status_code == 404
        html = response.content.decode()
        assert "<h1>Not Found</h1>" in html and STYLESHEET not in html

    # The admin's own 403 (a staff user without the model's permission) is Django's too.
    admin = signed_in("bystander").get(reverse("admin:pki_core_certificate_changelist"))
    assert admin.status_code == 403
    html = admin.content.decode()
    assert "<h1>403 Forbidden</h1>" in html and STYLESHEET not in html
