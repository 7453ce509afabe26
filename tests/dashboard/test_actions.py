"""What operators do on the dashboard: find certificates, revoke one, deactivate an ACME account."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.test import Client
from django.urls import reverse

from pki_server.acme import accounts, problems
from pki_server.acme.models import AcmeAccount, AcmeAuthorization
from pki_server.core import signals
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.ocsp import clear_caches, refresh_ocsp_responders
from pki_server.dashboard.search import normalize_serial
from tests.dashboard import pages_fixtures
from tests.dashboard.pages_fixtures import AcmeRows, new_account, new_order

pytestmark = pytest.mark.django_db

# The shared fixtures of the dashboard's tests (pages_fixtures.py).
acme = pages_fixtures.acme
certs = pages_fixtures.certs
staff = pages_fixtures.staff
staff_client = pages_fixtures.staff_client

LIST = reverse("dashboard:certificates")


def listed(client: Client, **params: str) -> set[str]:
    """Serials of the certificates the list shows."""
    response = client.get(LIST, params)
    assert response.status_code == 200
    return {cert.serial for cert in response.context["page"].object_list}


def serials(certs: dict[str, Certificate], *names: str) -> set[str]:
    return {certs[name].serial for name in names}


def colon_serial(cert: Certificate) -> str:
    """The serial as `openssl x509 -serial` and browsers print it: bytes with colons, maybe a leading 00."""
    number = cert.pub.serial_number
    return number.to_bytes(number.bit_length() // 8 + 1, "big").hex(":")


# --- Search and filters ---------------------------------------------------------------------------


@pytest.mark.parametrize("term, expected", [
    ("www.example.com", ["www"]),
    ("WWW.EXAMPLE", ["www"]),
    ("alt.example.net", ["www"]),  # only in a SAN
    ("DNS:alt.example", ["www"]),
    ("example.org", ["api"]),
    ("soon", ["soon"]),
    ("no-such-name.example", []),
])
def test_search_by_name(staff_client: Client, certs: dict[str, Certificate], term: str, expected: list[str]) -> None:
    assert listed(staff_client, q=term) == serials(certs, *expected)


def test_search_by_serial(staff_client: Client, certs: dict[str, Certificate]) -> None:
    cert = certs["later"]
    for term in (cert.serial, cert.serial.lower(), colon_serial(cert), colon_serial(cert).upper(),
                 f"  {colon_serial(cert)} ", cert.serial[:16]):
        assert listed(staff_client, q=term) == {cert.serial}, term
    assert normalize_serial("00:0a:BC") == "ABC" and normalize_serial("not hex") is None
    assert normalize_serial("0a:b") is None  # colons only between whole bytes


def test_filters(staff_client: Client, certs: dict[str, Certificate], root: CertificateAuthority,
                 intermediate: CertificateAuthority) -> None:
    assert listed(staff_client, status="revoked") == serials(certs, "gone")
    assert listed(staff_client, status="expired") == serials(certs, "old")
    assert listed(staff_client, status="valid") == serials(certs, "www", "api", "soon", "later")
    assert listed(staff_client, expiring="7") == serials(certs, "soon")
    assert listed(staff_client, expiring="90") == serials(certs, "soon", "later")  # not the revoked "gone"
    assert listed(staff_client, ca=str(intermediate.pk), q="example.com", status="valid") == serials(
        certs, "www", "soon", "later")
    assert listed(staff_client, ca=str(root.pk)) == set()
    # A bad value is reported and that filter left out; the others still apply.
    response = staff_client.get(LIST, {"status": "bogus", "q": "soon"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert {c.serial for c in response.context["page"].object_list} == serials(certs, "soon")
    assert listed(staff_client, ca="999999") == set(certs[n].serial for n in certs)


# --- Revocation -----------------------------------------------------------------------------------


@pytest.fixture
def revocations() -> Any:
    seen: list[Any] = []

    def receiver(sender: Any, cert: Any, **kwargs: Any) -> None:
        seen.append(cert.pk)

    signals.post_revoke_cert.connect(receiver)
    yield seen
    signals.post_revoke_cert.disconnect(receiver)


def ocsp_status(client: Client, cert: Certificate) -> ocsp.OCSPCertStatus:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert.pub, cert.ca.pub, hashes.SHA256()).build()
    response = client.post(f"/ocsp/{cert.ca.serial}/", request.public_bytes(serialization.Encoding.DER),
                           content_type="application/ocsp-request")
    assert response.status_code == 200
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status


def test_revoke_through_the_page(client: Client, staff_client: Client, certs: dict[str, Certificate],
                                 revocations: list[int]) -> None:
    clear_caches()
    refresh_ocsp_responders()
    cert = certs["www"]
    assert ocsp_status(client, cert) is ocsp.OCSPCertStatus.GOOD
    url = reverse("dashboard:certificate-revoke", args=[cert.serial])
    response = staff_client.post(url, {"reason": "key_compromise", "compromised": "2024-05-01T10:30"}, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:certificate", args=[cert.serial]), 302)]
    html = response.content.decode()
    assert f"Revoked {cert} (serial {cert.serial}), reason: key compromise." in html
    assert 'id="revoked-reason">key_compromise<' in html and 'id="revoke"' not in html
    cert.refresh_from_db()
    assert cert.revoked and cert.revoked_reason == "key_compromise" and cert.compromised is not None
    assert revocations == [cert.pk]  # the signals of cert.revoke() fired: CRL and OCSP follow
    assert ocsp_status(client, cert) is ocsp.OCSPCertStatus.REVOKED
    crl = cert.ca.crls.order_by("-number").first()
    assert crl is not None
    assert x509.load_der_x509_crl(bytes(crl.der)).get_revoked_certificate_by_serial_number(cert.pub.serial_number)

    # Twice: a clear message, and nothing changes.
    again = staff_client.post(url, {"reason": "superseded"}, follow=True)
    assert again.status_code == 200
    assert f"{cert} (serial {cert.serial}) was revoked already; nothing changed." in again.content.decode()
    cert.refresh_from_db()
    assert cert.revoked_reason == "key_compromise" and revocations == [cert.pk]


@pytest.mark.parametrize("data, error", [
    ({"reason": "remove_from_crl"}, "Select a valid choice"),
    ({"reason": "made_up"}, "Select a valid choice"),
    ({}, "This field is required"),
    ({"reason": "key_compromise", "compromised": "2999-01-01T00:00"}, "cannot be in the future"),
    ({"reason": "key_compromise", "compromised": "yesterday"}, "Enter a valid date/time"),
])
def test_revoke_rejects_bad_input(staff_client: Client, certs: dict[str, Certificate], revocations: list[int],
                                  data: dict[str, str], error: str) -> None:
    cert = certs["www"]
    crls_before = cert.ca.crls.count()
    response = staff_client.post(reverse("dashboard:certificate-revoke", args=[cert.serial]), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    cert.refresh_from_db()
    assert not cert.revoked and revocations == [] and cert.ca.crls.count() == crls_before


def test_revoke_needs_post_and_csrf(staff: Any, certs: dict[str, Certificate]) -> None:
    cert = certs["www"]
    url = reverse("dashboard:certificate-revoke", args=[cert.serial])
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.get(url).status_code == 405
    assert client.post(url, {"reason": "superseded"}).status_code == 403
    page = client.get(reverse("dashboard:certificate", args=[cert.serial])).content.decode()
    token = re.search(r'id="revoke".*?name="csrfmiddlewaretoken" value="([^"]+)"', page, re.S)
    assert token is not None
    assert client.post(url, {"reason": "superseded", "csrfmiddlewaretoken": token.group(1)}).status_code == 302
    cert.refresh_from_db()
    assert cert.revoked and cert.revoked_reason == "superseded"
    assert client.post(reverse("dashboard:certificate-revoke", args=["ABCDEF0123"]),
                       {"reason": "superseded", "csrfmiddlewaretoken": token.group(1)}).status_code == 404


# --- ACME accounts --------------------------------------------------------------------------------


def test_deactivate_account(staff_client: Client, acme: AcmeRows) -> None:
    account = acme.account
    assert acme.pending_authz.status == AcmeAuthorization.STATUS_PENDING
    url = reverse("dashboard:account-deactivate", args=[account.slug])

    # Without the confirmation nothing happens.
    response = staff_client.post(url, {})
    assert response.status_code == 400 and "This field is required" in response.content.decode()
    account.refresh_from_db()
    assert account.status == AcmeAccount.STATUS_VALID

    response = staff_client.post(url, {"confirm": "on"}, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:account", args=[account.slug]), 302)]
    html = response.content.decode()
    assert "is deactivated; its pending authorizations are too" in html and 'id="deactivate"' not in html
    account.refresh_from_db()
    assert account.status == AcmeAccount.STATUS_DEACTIVATED
    statuses = dict(AcmeAuthorization.objects.filter(account=account).values_list("identifier", "status"))
    assert statuses == {"good.example.com": "valid", "bad.example.com": "invalid", "tls.example.com": "invalid",
                        "web.example.com": "invalid", "later.example.com": "deactivated"}
    # The account can no longer make ACME requests (the same rule ACME applies to kid lookups).
    with pytest.raises(problems.AcmeProblem, match="deactivated"):
        accounts.new_account(account.ca, json.loads(account.jwk), {})
    # The other account is untouched; deactivating twice says so and writes nothing.
    acme.other.refresh_from_db()
    assert acme.other.status == AcmeAccount.STATUS_VALID
    again = staff_client.post(url, {"confirm": "on"}, follow=True)
    assert "is deactivated already; nothing changed" in again.content.decode()


def test_client_deactivation_uses_the_same_function(intermediate: CertificateAuthority) -> None:
    """accounts.update({"status": "deactivated"}) (the client's §7.3.6 request) behaves as before."""
    account = new_account(intermediate)
    _, (authz,) = new_order(account, "x.example.com")
    assert accounts.update(account, {"status": "deactivated"}).status == "deactivated"
    account.refresh_from_db()
    authz.refresh_from_db()
    assert account.status == "deactivated" and authz.status == "deactivated"
    with pytest.raises(problems.AcmeProblem, match="only status"):
        accounts.update(new_account(intermediate), {"status": "revoked"})
