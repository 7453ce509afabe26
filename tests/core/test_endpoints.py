"""core/endpoints.py (what `serve` answers OCSP, CRL and issuer requests with) gives the replies
Django's views give, for good requests and bad ones alike."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from django.test import Client

from pki_server.asgi import application
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.ocsp import clear_caches, refresh_ocsp_responders
from tests.acme.asgi_client import AsgiAcmeClient
from tests.core.test_ocsp import OCSP_REQUEST, build_request
from tests.fixtures import make_csr

pytestmark = pytest.mark.django_db(transaction=True)
COMPARED = ("content-type", "cache-control", "etag", "last-modified", "expires", "content-disposition", "allow")


@pytest.fixture
def setup(intermediate: CertificateAuthority, settings) -> tuple[CertificateAuthority, Certificate, Certificate]:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["testserver"]
    clear_caches()
    refresh_ocsp_responders()
    good = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=good.example.com")
    revoked = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=revoked.example.com")
    revoked.revoke("key_compromise")
    return intermediate, good, revoked


def both(method: str, path: str, body: bytes = b"", **headers: str) -> tuple[Any, Any]:
    """The same request to the lean endpoint (through the ASGI application) and to Django's view."""
    lean = AsgiAcmeClient(application).request(method, path, content=body or None, headers=headers)
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    content_type = meta.pop("HTTP_CONTENT_TYPE", "application/octet-stream")
    django = Client().generic(method, path, body, content_type=content_type, **meta)
    return lean, django


def same_reply(lean: Any, django: Any, compare_body: bool = True) -> None:
    assert lean.status_code == django.status_code, (lean.text, django.content)
    for name in COMPARED:
        if name == "content-type" and lean.status_code == 405:
            continue  # Django's 405 is an empty text/html page; ours an empty text/plain one
        assert lean.headers.get(name) == django.headers.get(name), name
    if compare_body:
        assert lean.content == django.content


def status_of(response: Any) -> Any:
    answer = ocsp.load_der_ocsp_response(response.content)
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return answer.response_status
    return answer.certificate_status, answer.revocation_reason


def test_ocsp_answers_alike(setup: tuple[CertificateAuthority, Certificate, Certificate]) -> None:
    ca, good, revoked = setup
    issuer = ca.pub
    for cert, expected in ((good, (ocsp.OCSPCertStatus.GOOD, None)),
                           (revoked, (ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.key_compromise))):
        request = build_request(cert.pub, issuer)
        for method, path, body, headers in (
            ("POST", f"/ocsp/{ca.serial}/", request, {"Content-Type": OCSP_REQUEST}),
            ("GET", f"/ocsp/{ca.serial}/{base64.b64encode(request).decode()}", b"", {}),
        ):
            lean, django = both(method, path, body, **headers)
            # Signatures and times differ between two responses: compare what they say.
            assert status_of(lean) == status_of(django) == expected
            assert lean.status_code == django.status_code == 200
            assert lean.headers["cache-control"].split(",")[0][:8] == django.headers["cache-control"].split(",")[0][:8]


@pytest.mark.parametrize(("method", "suffix", "body", "headers"), [
    ("POST", "/", b"not DER", {"Content-Type": OCSP_REQUEST}),          # malformedRequest
    ("POST", "/", b"", {"Content-Type": OCSP_REQUEST}),                  # empty: malformedRequest
    ("POST", "/", b"\x30" * 20000, {"Content-Type": OCSP_REQUEST}),      # too large: malformedRequest
    ("POST", "/", b"x", {"Content-Type": "text/plain"}),                 # wrong type: malformedRequest
    ("GET", "/%%%", b"", {}),                                            # not base64: malformedRequest
    ("PUT", "/", b"x", {"Content-Type": OCSP_REQUEST}),                  # 405 with Allow
])
def test_bad_ocsp_requests_answered_alike(setup: tuple[CertificateAuthority, Certificate, Certificate], method: str,
                                          suffix: str, body: bytes, headers: dict[str, str]) -> None:
    ca = setup[0]
    lean, django = both(method, f"/ocsp/{ca.serial}{suffix}", body, **headers)
    same_reply(lean, django)
    if lean.status_code == 200:
        assert status_of(lean) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_unknown_ca_is_404(setup: tuple[CertificateAuthority, Certificate, Certificate]) -> None:
    for path in ("/ocsp/ABCDEF/", "/crl/ABCDEF.crl", "/issuers/ABCDEF.der"):
        lean, django = both("POST" if path.startswith("/ocsp") else "GET", path, b"x",
                            **({"Content-Type": OCSP_REQUEST} if path.startswith("/ocsp") else {}))
        assert lean.status_code == django.status_code == 404


def test_crl_and_issuer_answered_alike(setup: tuple[CertificateAuthority, Certificate, Certificate]) -> None:
    ca = setup[0]
    for path in (f"/crl/{ca.serial}.crl", f"/crl/{ca.serial}.pem", f"/crl/{ca.serial}.crl?format=pem",
                 f"/crl/{ca.serial.lower()}.crl", f"/crl/{ca.serial}.crl?format=xml", f"/issuers/{ca.serial}.der",
                 f"/issuers/{ca.serial.lower()}.der"):
        for method in ("GET", "HEAD"):
            lean, django = both(method, path)
            same_reply(lean, django)
    served = x509.load_der_x509_crl(both("GET", f"/crl/{ca.serial}.crl")[0].content)
    assert served.get_revoked_certificate_by_serial_number(setup[2].pub.serial_number) is not None
    lean, django = both("POST", f"/crl/{ca.serial}.crl")
    same_reply(lean, django)
    assert lean.status_code == 405


def test_crl_conditional_requests_answered_alike(setup: tuple[CertificateAuthority, Certificate, Certificate]) -> None:
    ca = setup[0]
    first = both("GET", f"/crl/{ca.serial}.crl")[0]
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"0-der", {etag}'}, {"If-None-Match": '"0-der"'},
                    {"If-Modified-Since": modified}, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}):
        lean, django = both("GET", f"/crl/{ca.serial}.crl", **headers)
        assert lean.status_code == django.status_code, headers
        assert lean.headers.get("etag") == django.headers.get("etag")
        assert lean.content == django.content
    assert both("GET", f"/crl/{ca.serial}.crl", **{"If-None-Match": etag})[0].status_code == 304


def test_a_host_not_served_is_refused(setup: tuple[CertificateAuthority, Certificate, Certificate]) -> None:
    ca = setup[0]
    lean = AsgiAcmeClient(application).request("GET", f"/crl/{ca.serial}.crl", headers={"Host": "evil.example"})
    assert lean.status_code == 400
