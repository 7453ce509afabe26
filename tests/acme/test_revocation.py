"""End to end against `pki-server serve`: revokeCert (RFC 8555 §7.6) with the `acme` library's ClientV2, signed by
the issuing account, by the certificate's own key, by another account that controls every name, and refused for
everyone else. Every test checks the certificate's row in the server's database."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.acme.flow_helpers import (
    acme_client,
    assert_problem,
    authorize,
    ec_key,
    new_order,
    no_new_tracebacks,
    obtain,
    post,
    register,
    unique_name,
)
from tests.acme.server import PkiServer


@pytest.fixture(autouse=True)
def _server_log_clean(pki_server: PkiServer) -> Iterator[None]:
    with no_new_tracebacks(pki_server):
        yield


def revocation_row(server: PkiServer, certificate: x509.Certificate) -> tuple[bool, str]:
    """(revoked, revoked_reason) of the certificate's row."""
    rows = server.query("SELECT revoked, revoked_reason, revoked_date FROM pki_core_certificate WHERE der = ?",
                        certificate.public_bytes(serialization.Encoding.DER))
    assert len(rows) == 1, rows
    revoked, reason, date = rows[0]
    assert bool(date) == bool(revoked)
    return bool(revoked), reason


def revoke(acme: Any, certificate: x509.Certificate, reason: Any = None, *, use_jwk: bool = False) -> Any:
    payload: dict[str, Any] = messages.Revocation(certificate=certificate, reason=0).to_partial_json()
    payload = {"certificate": payload["certificate"]}
    if reason is not None:
        payload["reason"] = reason
    return post(acme, acme.directory["revokeCert"], payload, use_jwk=use_jwk)


@pytest.fixture
def issued(pki_server: PkiServer) -> tuple[Any, x509.Certificate, Any, list[str]]:
    """An account, a certificate it obtained for two names, the certificate's key, and the names."""
    acme = register(pki_server)
    names = [unique_name("rev"), unique_name("rev")]
    _orderr, certificate, key = obtain(pki_server, acme, names)
    return acme, certificate, key, names


def test_revoke_by_issuing_account(pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    acme, certificate, _key, _names = issued
    assert revocation_row(pki_server, certificate) == (False, "")
    acme.revoke(certificate, 4)  # ClientV2 checks for 200 itself
    assert revocation_row(pki_server, certificate) == (True, "superseded")


def test_revoke_with_the_certificates_key(pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    _acme, certificate, key, _names = issued
    holder = acme_client(pki_server, key)  # no account: the request carries the certificate's key as jwk
    response = revoke(holder, certificate, 1, use_jwk=True)
    assert response.status_code == 200, response.text
    assert revocation_row(pki_server, certificate) == (True, "key_compromise")


def test_revoke_with_another_key_as_jwk_is_unauthorized(pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    _acme, certificate, _key, _names = issued
    stranger = acme_client(pki_server, ec_key())
    assert_problem(revoke(stranger, certificate, 1, use_jwk=True), 403, "unauthorized")
    assert revocation_row(pki_server, certificate) == (False, "")


def test_revoke_by_account_with_valid_authorizations_for_all_names(
        pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    _acme, certificate, _key, names = issued
    other = register(pki_server)
    # Control of one name is not enough.
    partial, _ = new_order(pki_server, other, names[:1])
    assert authorize(pki_server, other, partial)["status"] == "ready"
    assert_problem(revoke(other, certificate, 0), 403, "unauthorized")
    assert revocation_row(pki_server, certificate) == (False, "")
    # Control of both is (RFC 8555 §7.6), without ever finalizing an order.
    both, _ = new_order(pki_server, other, names)
    assert both.body.status == messages.STATUS_PENDING  # the first name's authorization is reused, valid
    assert authorize(pki_server, other, both)["status"] == "ready"
    other.revoke(certificate, 5)
    assert revocation_row(pki_server, certificate) == (True, "cessation_of_operation")


def test_revoke_by_unrelated_account_is_unauthorized(pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    _acme, certificate, _key, _names = issued
    stranger = register(pki_server)
    assert_problem(revoke(stranger, certificate, 0), 403, "unauthorized")
    assert_problem(revoke(stranger, certificate), 403, "unauthorized")
    assert revocation_row(pki_server, certificate) == (False, "")


@pytest.mark.parametrize("reason", [2, 6, 7, 8, 10, 11, -1, "1", 1.0, True, None], ids=str)
def test_bad_revocation_reason(pki_server: PkiServer, issued: tuple[Any, ...], reason: Any) -> None:
    acme, certificate, _key, _names = issued
    payload_reason = reason if reason is not None else {"code": 1}
    assert_problem(revoke(acme, certificate, payload_reason), 400, "badRevocationReason")
    assert revocation_row(pki_server, certificate) == (False, "")


def test_reason_defaults_to_unspecified_and_revoking_twice_is_already_revoked(
        pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    acme, certificate, key, _names = issued
    response = revoke(acme, certificate)  # no reason: unspecified (RFC 8555 §7.6)
    assert response.status_code == 200, response.text
    assert 'rel="index"' in response.headers["Link"]
    assert response.headers["Replay-Nonce"]
    assert revocation_row(pki_server, certificate) == (True, "unspecified")
    assert_problem(revoke(acme, certificate, 1), 400, "alreadyRevoked")
    assert_problem(revoke(acme_client(pki_server, key), certificate, 1, use_jwk=True), 400, "alreadyRevoked")
    assert revocation_row(pki_server, certificate) == (True, "unspecified")


def test_revoking_a_certificate_this_ca_did_not_issue(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    key = ec_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, unique_name())])
    now = datetime.datetime.now(datetime.UTC)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    assert_problem(revoke(acme, foreign, 1), 404, "malformed")
    assert_problem(revoke(acme_client(pki_server, key), foreign, 1, use_jwk=True), 404, "malformed")


def test_server_log_has_no_traceback(pki_server: PkiServer) -> None:
    """Last: nothing any ACME test did made the server log a traceback."""
    log = pki_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


def test_acme_revocation_is_visible_in_crl_and_ocsp(pki_server: PkiServer, issued: tuple[Any, ...]) -> None:
    """The ACME door (issue 5): revokeCert shows in the served CRL and in OCSP at once."""
    import httpx
    from cryptography.x509 import ocsp

    acme, certificate, _key, _names = issued
    issuer_url = next(
        d.access_location.value
        for d in certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        if d.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS
    )
    issuer = x509.load_der_x509_certificate(httpx.get(issuer_url, timeout=10).content)
    crl_url = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    ocsp_url = next(
        d.access_location.value
        for d in certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
    )
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()

    def ocsp_status() -> ocsp.OCSPCertStatus:
        response = httpx.post(ocsp_url, content=request.public_bytes(serialization.Encoding.DER),
                              headers={"Content-Type": "application/ocsp-request"}, timeout=10)
        return ocsp.load_der_ocsp_response(response.content).certificate_status

    assert ocsp_status() == ocsp.OCSPCertStatus.GOOD
    acme.revoke(certificate, 1)
    crl = x509.load_der_x509_crl(httpx.get(crl_url, timeout=10).content)
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert ocsp_status() == ocsp.OCSPCertStatus.REVOKED
