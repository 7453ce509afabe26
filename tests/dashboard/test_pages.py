"""The dashboard's pages: who gets in, and what each page shows (with real CAs, certificates and ACME rows)."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.ocsp_responder import refresh_ocsp_responders
from pki_server.dashboard import charts, stats
from tests.dashboard import pages_fixtures
from tests.dashboard.pages_fixtures import PASSWORD, AcmeRows, page_urls

pytestmark = pytest.mark.django_db

# The shared fixtures of the dashboard's tests (pages_fixtures.py).
acme = pages_fixtures.acme
certs = pages_fixtures.certs
staff = pages_fixtures.staff
staff_client = pages_fixtures.staff_client

LIVE_SECTION = ('<section id="live-events" data-ws-path="/dashboard/ws/events/"><h2>Live events</h2>'
                '<ul id="live-event-list"></ul></section>')


def action_urls(cert: Certificate, rows: AcmeRows) -> list[tuple[str, dict[str, str]]]:
    return [
        (reverse("dashboard:certificate-revoke", args=[cert.serial]), {"reason": "superseded"}),
        (reverse("dashboard:account-deactivate", args=[rows.account.slug]), {"confirm": "on"}),
    ]


# --- Access ----------------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login(client: Client, intermediate: CertificateAuthority,
                                    certs: dict[str, Certificate], acme: AcmeRows) -> None:
    for url in page_urls(intermediate, certs["www"], acme):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == f"{reverse('dashboard:login')}?next={quote(url)}", url
    for url, data in action_urls(certs["www"], acme):
        response = client.post(url, data)
        assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login"))
    certs["www"].refresh_from_db()
    acme.account.refresh_from_db()
    assert not certs["www"].revoked and acme.account.status == "valid"


@pytest.mark.parametrize("kind", ["not staff", "staff without permissions", "inactive staff"])
def test_others_are_denied(client: Client, intermediate: CertificateAuthority, certs: dict[str, Certificate],
                           acme: AcmeRows, kind: str) -> None:
    user = User.objects.create_user("someone", password=PASSWORD, is_staff=kind != "not staff",
                                     is_active=kind != "inactive staff")
    client.force_login(user)
    for url in page_urls(intermediate, certs["www"], acme):
        response = client.get(url)
        assert response.status_code in ({403} if kind != "inactive staff" else {302, 403}), url
        assert b"BEGIN CERTIFICATE" not in response.content
    for url, data in action_urls(certs["www"], acme):
        client.post(url, data)
    certs["www"].refresh_from_db()
    acme.account.refresh_from_db()
    assert not certs["www"].revoked and acme.account.status == "valid"


def test_view_permissions_allow_viewing_but_not_changing(client: Client, intermediate: CertificateAuthority,
                                                         certs: dict[str, Certificate], acme: AcmeRows) -> None:
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_certificate", "view_certificateauthority", "view_acmeaccount"]))
    client.force_login(viewer)
    for url in page_urls(intermediate, certs["www"], acme):
        assert client.get(url).status_code == 200, url
    detail = client.get(reverse("dashboard:certificate", args=[certs["www"].serial])).content.decode()
    assert 'id="revoke"' not in detail
    for url, data in action_urls(certs["www"], acme):
        assert client.post(url, data).status_code == 403, url
    certs["www"].refresh_from_db()
    acme.account.refresh_from_db()
    assert not certs["www"].revoked and acme.account.status == "valid"


def test_login_page_logs_staff_in_and_refuses_others(client: Client, staff: User) -> None:
    User.objects.create_user("plain", password=PASSWORD)
    client_csrf = Client(enforce_csrf_checks=True)
    page = client_csrf.get(reverse("dashboard:login"))
    assert page.status_code == 200 and 'name="csrfmiddlewaretoken"' in page.content.decode()
    # Without the CSRF token the login POST is refused.
    assert client_csrf.post(reverse("dashboard:login"), {"username": "operator", "password": PASSWORD}
                            ).status_code == 403

    refused = client.post(reverse("dashboard:login"), {"username": "plain", "password": PASSWORD})
    assert refused.status_code == 200 and "staff account" in refused.content.decode()
    wrong = client.post(reverse("dashboard:login"), {"username": "operator", "password": "nope"})
    assert wrong.status_code == 200 and "_auth_user_id" not in client.session

    response = client.post(reverse("dashboard:login"), {"username": "operator", "password": PASSWORD,
                                                        "next": reverse("dashboard:accounts")})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:accounts")
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert client.get(reverse("dashboard:overview")).status_code == 200

    # Logging out is a POST (a GET is refused), then every page sends to the login page again.
    assert client.get(reverse("dashboard:logout")).status_code == 405
    response = client.post(reverse("dashboard:logout"))
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:login")
    assert client.get(reverse("dashboard:overview")).status_code == 302


def test_logout_needs_csrf(staff: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(reverse("dashboard:logout")).status_code == 403
    assert client.get(reverse("dashboard:overview")).status_code == 200


# --- Pages -----------------------------------------------------------------------------------------


def test_overview(staff_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                  certs: dict[str, Certificate], acme: AcmeRows) -> None:
    CertificateAuthority.objects.filter(pk=root.pk).update(enabled=False)
    response = staff_client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    html = response.content.decode()
    assert LIVE_SECTION in html
    assert '<script src="/static/dashboard/live.js" defer></script>' in html
    # CAs: status, enabled or not, days left.
    cas = html.split('id="cas"', 1)[1].split("</section>", 1)[0]
    for ca in (root, intermediate):
        assert reverse("dashboard:ca", args=[ca.serial]) in cas
        assert f">{(ca.not_after - timezone.now()).days}<" in cas
    assert "status-disabled" in cas and "(root)" in cas
    # Orders by status: one valid, two invalid (dns-01 and tls-alpn-01 failed), and three pending.
    orders = dict(re.findall(r'status-(\w+)">\w+</span></td><td class="number">(\d+)<',
                             html.split('id="orders"', 1)[1].split("</section>", 1)[0]))
    assert orders == {"pending": "1", "ready": "0", "processing": "0", "valid": "1", "invalid": "3"}
    # Validation failures by challenge type and problem type.
    failures = re.findall(r"<tr><td>([\w-]+)</td><td title=\"([^\"]*)\">(\w+)</td><td class=\"number\">(\d+)<",
                          html.split('id="failures"', 1)[1].split("</section>", 1)[0])
    assert sorted(failures) == [
        ("dns-01", "urn:ietf:params:acme:error:dns", "dns", "1"),
        ("http-01", "urn:ietf:params:acme:error:connection", "connection", "1"),
        ("tls-alpn-01", "urn:ietf:params:acme:error:connection", "connection", "1"),
    ]
    # Expiring within 30 days: not revoked, not expired; OCSP responders left out.
    expiring = html.split('id="expiring"', 1)[1].split("</section>", 1)[0]
    assert certs["soon"].serial in expiring
    for name in ("www", "later", "old", "gone"):
        assert certs[name].serial not in expiring, name


def test_overview_chart_has_the_right_days(staff_client: Client, intermediate: CertificateAuthority,
                                           certs: dict[str, Certificate]) -> None:
    refresh_ocsp_responders()  # OCSP responder certificates are not counted
    now = timezone.now()
    Certificate.objects.filter(pk=certs["api"].pk).update(created=now - timedelta(days=3))
    Certificate.objects.filter(pk=certs["later"].pk).update(created=now - timedelta(days=3))
    Certificate.objects.filter(pk=certs["old"].pk).update(created=now - timedelta(days=45))  # outside the chart
    html = staff_client.get(reverse("dashboard:overview")).content.decode()
    by_day = {day: int(value) for value, day in re.findall(r'data-value="(\d+)"><title>(\d{4}-\d{2}-\d{2}): ',
                                                            html)}
    assert len(by_day) == 30
    today, three_ago = now.date(), (now - timedelta(days=3)).date()
    assert by_day[today.isoformat()] == 3  # www, soon, gone
    assert by_day[three_ago.isoformat()] == 2
    assert sum(by_day.values()) == 5
    assert f"<title>{three_ago:%Y-%m-%d}: 2 certificates</title>" in html
    assert "5 certificates issued in the last 30 days" in html


def test_chart_escapes_and_scales() -> None:
    svg = charts.bar_chart([charts.Bar("<b>", 3, 'x"<script>'), charts.Bar("b", 0, "zero")], title="A & B")
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;b&gt;" in svg and "A &amp; B" in svg and "x&quot;&lt;script&gt;" in svg
    assert svg.count("<rect ") == 2 and ">5</text>" in svg  # the axis tops at 5 for a maximum of 3
    assert [charts.nice_maximum(v) for v in (0, 1, 2, 3, 7, 10, 11, 60, 101)] == [1, 1, 2, 5, 10, 10, 20, 100, 200]
    empty = charts.issuance_chart([])
    assert "<rect " not in empty and "<svg" in empty
    # As wide as its container, the drawing scaled to fit and centred (dashboard.css sets height: auto).
    assert f'viewBox="0 0 {charts.WIDTH} {charts.HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet"' in svg


def test_ca_detail(staff_client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                   certs: dict[str, Certificate]) -> None:
    refresh_ocsp_responders()
    url = reverse("dashboard:ca", args=[intermediate.serial.lower()])  # any case finds it
    html = staff_client.get(url).content.decode()
    # Long URLs may wrap after a "/" of their path (not within "//", nor in the middle of the serial).
    assert f"/ocsp/<wbr>{intermediate.serial}/" in html and "http:/<wbr>/" not in html
    html = html.replace("<wbr>", "")
    crl = intermediate.crls.order_by("-number").first()
    assert crl is not None and crl.number >= 2  # the first, and the one of the revocation in `certs`
    responder = intermediate.ocsp_responders.get().certificate
    for text in ("Example Intermediate", intermediate.serial, "EC secp256r1", intermediate.sha256_fingerprint,
                 f"/crl/{intermediate.serial}.crl", f"/ocsp/{intermediate.serial}/",
                 f"<dt>Number</dt><dd>{crl.number}</dd>", f"{crl.next_update:%Y-%m-%d %H:%M:%S} UTC",
                 responder.serial, f"{responder.not_after:%Y-%m-%d %H:%M:%S} UTC",
                 "<dt>ACME enabled</dt><dd>yes</dd>", "<dt>Profile</dt><dd>webserver</dd>",
                 reverse("dashboard:ca", args=[root.serial]),
                 reverse("dashboard:ca-bundle", args=[intermediate.serial])):
        assert text in html, text
    recent = html.split('id="recent"', 1)[1]
    assert all(cert.serial in recent for cert in certs.values())

    assert 'id="no-responder"' not in html

    # Before the worker's first refresh: no responder yet, and the page says when there will be one.
    intermediate.ocsp_responders.all().delete()
    words = re.sub(r"\s+", " ", staff_client.get(url).content.decode())
    assert ("No valid responder certificate yet. The server's worker makes one within seconds of its start "
            "(it refreshes responders every 5 s) once it can use the CA's key; until then, the CA's own key "
            "signs OCSP responses where it is usable.") in words

    bundle = staff_client.get(reverse("dashboard:ca-bundle", args=[intermediate.serial]))
    assert bundle["Content-Type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificates(bundle.content) == [intermediate.pub, root.pub]
    assert staff_client.get(reverse("dashboard:ca", args=["ABCDEF"])).status_code == 404


def test_certificate_detail(staff_client: Client, intermediate: CertificateAuthority,
                            certs: dict[str, Certificate]) -> None:
    cert = certs["www"]
    html = staff_client.get(reverse("dashboard:certificate", args=[cert.serial])).content.decode()
    for text in ("subjectAltName", "DNS:alt.example.net", "keyUsage", "digital_signature", "extendedKeyUsage",
                 "serverAuth", "basicConstraints", "CA: no", "authorityInfoAccess",
                 f"OCSP: URI:{intermediate.ocsp_url}", "cRLDistributionPoints", f"URI:{intermediate.crl_url}",
                 "subjectKeyIdentifier", "authorityKeyIdentifier", cert.sha256_fingerprint, "EC secp256r1",
                 'id="revoke"', 'name="reason"', 'value="key_compromise"', 'name="csrfmiddlewaretoken"'):
        assert text in html, text
    # Critical flags: basicConstraints and keyUsage are critical, the SAN is not.
    rows = dict(re.findall(r'<td class="extension-name">(\w+)<span[^>]*>[\d.]+</span></td>\s*<td>(yes|no)</td>',
                           html))
    assert rows["basicConstraints"] == "yes" and rows["subjectAltName"] == "no"
    # The SANs one a line, in the certificate's order (not the stored "DNS:a,DNS:b").
    assert ('<dt>Subject alternative names</dt><dd><ul class="plain lines mono"><li>DNS:www.example.com</li>'
            '<li>DNS:alt.example.net</li></ul></dd>') in html

    pem = staff_client.get(reverse("dashboard:certificate-pem", args=[cert.serial]))
    assert pem["Content-Type"] == "application/x-pem-file" and pem["Cache-Control"] == "no-store"
    assert x509.load_pem_x509_certificate(pem.content) == cert.pub
    bundle = staff_client.get(reverse("dashboard:certificate-bundle", args=[cert.serial]))
    assert x509.load_pem_x509_certificates(bundle.content) == [cert.pub, intermediate.pub]
    # A revoked certificate has no revoke form; an unknown serial is a 404.
    gone = staff_client.get(reverse("dashboard:certificate", args=[certs["gone"].serial])).content.decode()
    assert 'id="revoke"' not in gone and ">superseded<" in gone
    assert staff_client.get(reverse("dashboard:certificate", args=["0BADBAD"])).status_code == 404
    assert staff_client.get(reverse("dashboard:certificate", args=["not-hex"])).status_code == 404


def test_account_pages(staff_client: Client, acme: AcmeRows) -> None:
    html = staff_client.get(reverse("dashboard:accounts")).content.decode()
    rows = re.findall(r'<tr>\s*<td><a class="mono" href="[^"]+">([\w-]+)</a></td>.*?</tr>', html, re.S)
    assert set(rows) == {acme.account.slug, acme.other.slug}
    mine = html.split(acme.account.slug, 2)[2].split("</tr>", 1)[0]
    assert "mailto:ops@example.com" in mine and '<td class="number">5</td>' in mine and "intermediate" in mine

    html = staff_client.get(reverse("dashboard:account", args=[acme.account.slug])).content.decode()
    for text in (acme.valid_order.slug, acme.invalid_order.slug, acme.pending_order.slug,
                 "good.example.com", "bad.example.com", "later.example.com",
                 reverse("dashboard:certificate", args=[acme.certificate.serial]),
                 "urn:ietf:params:acme:error:dns", "No TXT record found at _acme-challenge.bad.example.com",
                 "Connection refused by 192.0.2.7:443", "Timeout connecting to 192.0.2.8:80",
                 'id="deactivate"', 'name="confirm"'):
        assert text in html, text
    assert staff_client.get(reverse("dashboard:account", args=["nope"])).status_code == 404


def test_certificate_list_paginates(staff_client: Client, certs: dict[str, Certificate],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pki_server.dashboard.views import certificates as view

    monkeypatch.setattr(view, "PAGE_SIZE", 2)
    first = staff_client.get(reverse("dashboard:certificates"), {"status": "valid", "page": "1"}).content.decode()
    second = staff_client.get(reverse("dashboard:certificates"), {"status": "valid", "page": "2"}).content.decode()
    serials = {c.serial for c in certs.values()}
    on_first = {s for s in serials if s in first}
    on_second = {s for s in serials if s in second}
    # valid: www, api, soon and later, two a page
    assert "Page 1 of 2" in first and "?status=valid&amp;page=2" in first and "Page 2 of 2" in second
    assert len(on_first) == len(on_second) == 2 and not on_first & on_second


def test_overview_stats_are_bounded(intermediate: CertificateAuthority, certs: dict[str, Certificate],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "LIST_LIMIT", 1)
    for name in ("www", "api"):
        Certificate.objects.filter(pk=certs[name].pk).update(not_after=timezone.now() + timedelta(days=2))
    assert len(stats.expiring_soon()) == 1
