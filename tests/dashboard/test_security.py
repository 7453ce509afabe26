"""Secure headers on the dashboard's and the admin's responses, and no private key in any of them."""

from __future__ import annotations

import re

import pytest
from django.test import AsyncClient, Client
from django.urls import reverse

from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.ocsp_responder import refresh_ocsp_responders
from pki_server.dashboard.middleware import CONTENT_SECURITY_POLICY
from tests.dashboard import pages_fixtures
from tests.dashboard.pages_fixtures import AcmeRows, page_urls

# The shared fixtures of the dashboard's tests (pages_fixtures.py).
acme = pages_fixtures.acme
certs = pages_fixtures.certs
staff = pages_fixtures.staff
staff_client = pages_fixtures.staff_client


@pytest.mark.django_db
def test_secure_headers(client: Client, staff_client: Client, intermediate: CertificateAuthority,
                        certs: dict[str, Certificate], acme: AcmeRows) -> None:
    urls = [*page_urls(intermediate, certs["www"], acme), reverse("dashboard:login"), reverse("admin:index"),
            reverse("admin:pki_core_certificate_changelist")]
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert "no-store" in response["Cache-Control"], url
        if response["Content-Type"].startswith("text/html"):
            html = response.content.decode()
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url  # no inline script
            assert not re.search(r"\sstyle=", html), url  # no style attribute
            assert not re.search(r"\son[a-z]+=", html), url  # no inline event handler
            assert "http://" not in html.replace("http://www.w3.org/2000/svg", "").replace(
                "http://testserver", "").replace("http://127.0.0.1:8000", ""), url  # nothing from elsewhere
    # Redirects of anonymous visitors carry them too; other paths are left alone.
    assert client.get(reverse("dashboard:overview"))["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    crl = client.get(f"/crl/{intermediate.serial}.crl")
    assert crl.status_code == 200 and "Content-Security-Policy" not in crl and "public" in crl["Cache-Control"]
    for name, value in (("default-src", "'self'"), ("script-src", "'self'"), ("frame-ancestors", "'none'"),
                        ("object-src", "'none'"), ("img-src", "'self' data:")):
        assert f"{name} {value}" in CONTENT_SECURITY_POLICY


@pytest.mark.django_db
def test_no_private_key_anywhere(staff_client: Client, root: CertificateAuthority,
                                 intermediate: CertificateAuthority, certs: dict[str, Certificate],
                                 acme: AcmeRows) -> None:
    refresh_ocsp_responders()  # responders keep an (encrypted) key in their row
    responder = intermediate.ocsp_responders.get()
    urls = [
        *page_urls(intermediate, certs["www"], acme),
        reverse("dashboard:ca", args=[root.serial]), reverse("dashboard:ca-bundle", args=[root.serial]),
        reverse("dashboard:certificate", args=[responder.certificate.serial]),
        reverse("dashboard:certificate-pem", args=[responder.certificate.serial]),
        reverse("dashboard:certificates") + "?status=valid",
    ]
    for url in urls:
        body = staff_client.get(url).content.decode()
        assert "PRIVATE KEY" not in body, url
        assert responder.private_key not in body, url
        assert "key_backend_options" not in body and intermediate.key_backend_options.get("path", "\0") not in body


async def test_secure_headers_under_asgi() -> None:
    """Under ASGI (uvicorn) the middleware runs in async mode: same headers, no thread hop of its own."""
    response = await AsyncClient().get(reverse("dashboard:login"))
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response["X-Frame-Options"] == "DENY" and "no-store" in response["Cache-Control"]
