"""The OCSP responder (RFC 6960): delegated responder certificates, responses, the HTTP view, and
`openssl ocsp` against a real server."""

from __future__ import annotations

import base64
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.test import Client
from django.utils import timezone

from pki_server.core import ocsp_responder
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority, OcspResponder
from pki_server.core.ocsp import clear_caches, refresh_ocsp_responders
from pki_server.core.ocsp_responder import decrypt_private_key, ensure_responder
from pki_server.core.utils import x509_name
from tests.acme.server import PkiServer, running_server
from tests.fixtures import make_csr

pytestmark = pytest.mark.django_db

OCSP_REQUEST = "application/ocsp-request"


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_caches()


@pytest.fixture
def root(root: CertificateAuthority) -> CertificateAuthority:
    """The shared fixture's root, after the worker's periodic refresh made its responder."""
    refresh_ocsp_responders()
    return root


@pytest.fixture
def intermediate(intermediate: CertificateAuthority) -> CertificateAuthority:
    """The shared fixture's intermediate (and root), after the worker's refresh made their responders."""
    refresh_ocsp_responders()
    return intermediate


@pytest.fixture
def leaf(intermediate: CertificateAuthority) -> Certificate:
    return Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=leaf.example.com")


def build_request(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None,
                  nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(client: Client, ca: CertificateAuthority, body: bytes, content_type: str = OCSP_REQUEST):
    response = client.post(f"/ocsp/{ca.serial}/", body, content_type=content_type)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/ocsp-response"
    return response


def single(response) -> ocsp.OCSPResponse:  # type: ignore[no-untyped-def]
    return ocsp.load_der_ocsp_response(response.content)


def check_signature(answer: ocsp.OCSPResponse, ca: CertificateAuthority) -> x509.Certificate:
    """The response is signed by a responder certificate that ``ca`` issued for OCSP signing."""
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert len(answer.certificates) == 1
    signer = answer.certificates[0]
    signer.verify_directly_issued_by(ca.pub)
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    public_key = signer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    algorithm = answer.signature_hash_algorithm
    assert algorithm is not None
    public_key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(algorithm))
    assert answer.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    return signer


# --- Responder certificates ------------------------------------------------------------------

def test_new_ca_gets_a_responder(intermediate: CertificateAuthority) -> None:
    responder = OcspResponder.objects.get(ca=intermediate)
    cert = responder.certificate
    assert cert.ca == intermediate and cert.profile == "ocsp"
    pub = cert.pub
    pub.verify_directly_issued_by(intermediate.pub)
    assert list(pub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING]
    assert pub.extensions.get_extension_for_class(x509.OCSPNoCheck).critical is False
    assert pub.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert timedelta(days=3) - (cert.not_after - timezone.now()) < timedelta(minutes=1)
    assert "OCSP responder" in cert.cn and "." not in cert.cn and not cert.sans  # never a host name
    # The key is stored encrypted and belongs to the certificate; the intermediate is EC P-256.
    assert "PRIVATE KEY" not in responder.private_key and "BEGIN" not in responder.private_key
    key = decrypt_private_key(responder.private_key, f"ocsp-responder:{cert.serial}".encode())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == pub.public_key()
    # The root (P-384) got one of its own key family.
    root_responder = OcspResponder.objects.get(ca=intermediate.parent)
    assert root_responder.certificate.pub.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]


def test_stored_key_is_bound_to_its_certificate_and_secret(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    responder = OcspResponder.objects.get(ca=intermediate)
    with pytest.raises(ocsp_responder.ResponderKeyError, match="cannot be decrypted"):
        decrypt_private_key(responder.private_key, b"ocsp-responder:OTHER")
    settings.SECRET_KEY = "another secret"
    with pytest.raises(ocsp_responder.ResponderKeyError, match="PKI_SECRET_KEY"):
        decrypt_private_key(responder.private_key, f"ocsp-responder:{responder.certificate.serial}".encode())


def test_password_protected_ca_gets_a_responder_only_with_its_password(root: CertificateAuthority) -> None:
    ca = CertificateAuthority.objects.init(
        "locked", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256",
                                                                   password="s3cret"),
        x509_name("/CN=Locked"), parent=root,
    )
    assert not OcspResponder.objects.filter(ca=ca).exists()
    assert ensure_responder(ca) is None
    assert refresh_ocsp_responders() == 0  # skipped quietly
    responder = ensure_responder(ca, {"password": "s3cret"})
    assert responder is not None and responder.certificate.ca == ca
    assert ensure_responder(ca) == responder  # current: nothing new


def test_refresh_renews_when_a_third_is_left(intermediate: CertificateAuthority) -> None:
    old = OcspResponder.objects.get(ca=intermediate)
    assert refresh_ocsp_responders() == 0
    assert refresh_ocsp_responders(now=timezone.now() + timedelta(days=1)) == 0  # two thirds left
    assert refresh_ocsp_responders(now=timezone.now() + timedelta(days=2, hours=1)) == 2  # root and intermediate
    new = ocsp_responder.current_responder(intermediate)
    assert new is not None and new != old
    assert new.certificate.serial != old.certificate.serial
    assert new.certificate.pub.public_key() != old.certificate.pub.public_key()
    assert refresh_ocsp_responders() == 0
    # Once the old certificate has expired, the next renewal drops its row (and key).
    assert refresh_ocsp_responders(now=timezone.now() + timedelta(days=3, hours=1)) == 2
    assert not OcspResponder.objects.filter(pk=old.pk).exists()
    assert Certificate.objects.filter(pk=old.certificate.pk).exists()  # the certificate stays on record


def test_refresh_replaces_a_key_it_cannot_decrypt(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    old = OcspResponder.objects.get(ca=intermediate)
    settings.SECRET_KEY = "a new secret"
    ocsp_responder._key_cache.clear()  # a real change of secret comes with a restart
    assert refresh_ocsp_responders() == 2
    assert ocsp_responder.current_responder(intermediate) != old


def test_refresh_skips_disabled_and_capped(intermediate: CertificateAuthority) -> None:
    CertificateAuthority.objects.filter(pk=intermediate.pk).update(enabled=False)
    assert refresh_ocsp_responders(now=timezone.now() + timedelta(days=2, hours=1)) == 1  # only the root


# --- Responses over HTTP (in-process) --------------------------------------------------------

@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()])
def test_good_then_revoked(client: Client, intermediate: CertificateAuthority, leaf: Certificate,
                           algorithm: hashes.HashAlgorithm) -> None:
    body = build_request(leaf.pub, intermediate.pub, algorithm)
    response = post(client, intermediate, body)
    assert response["Cache-Control"] == "no-store"
    answer = single(response)
    check_signature(answer, intermediate)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == leaf.pub.serial_number
    assert isinstance(answer.hash_algorithm, type(algorithm))
    assert abs(answer.this_update_utc - timezone.now()) < timedelta(seconds=5)
    assert answer.next_update_utc is not None and answer.this_update_utc is not None
    assert answer.next_update_utc - answer.this_update_utc == timedelta(hours=1)

    leaf.revoke("key_compromise")
    answer = single(post(client, intermediate, body))
    check_signature(answer, intermediate)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise
    stored = Certificate.objects.get(pk=leaf.pk)
    assert answer.revocation_time_utc == stored.revoked_date.replace(microsecond=0)  # type: ignore[union-attr]


def test_unspecified_reason_is_left_out(client: Client, intermediate: CertificateAuthority, leaf: Certificate) -> None:
    leaf.revoke()
    answer = single(post(client, intermediate, build_request(leaf.pub, intermediate.pub)))
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED and answer.revocation_reason is None


def test_get_with_caching_headers(client: Client, intermediate: CertificateAuthority, leaf: Certificate) -> None:
    der = build_request(leaf.pub, intermediate.pub, hashes.SHA1())
    encoded = quote(base64.b64encode(der).decode(), safe="")
    response = client.get(f"/ocsp/{intermediate.serial}/{encoded}")
    assert response.status_code == 200 and response["Content-Type"] == "application/ocsp-response"
    answer = single(response)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 3590 <= max_age <= 3600 and "public" in response["Cache-Control"]
    assert response["Last-Modified"] and response["Expires"] and response["ETag"].startswith('"')
    # Not URL-encoded (a '/' or '+' kept as it is) works too, and so does the URL-safe alphabet.
    plain = base64.b64encode(der).decode()
    assert single(client.get(f"/ocsp/{intermediate.serial}/{plain}")).certificate_status is ocsp.OCSPCertStatus.GOOD
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    assert single(client.get(f"/ocsp/{intermediate.serial}/{urlsafe}")).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_nonce_is_echoed(client: Client, intermediate: CertificateAuthority, leaf: Certificate) -> None:
    answer = single(post(client, intermediate, build_request(leaf.pub, intermediate.pub, nonce=b"n" * 32)))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 32
    answer = single(post(client, intermediate, build_request(leaf.pub, intermediate.pub)))
    with pytest.raises(x509.ExtensionNotFound):
        answer.extensions.get_extension_for_class(x509.OCSPNonce)


def test_unknown(client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                 leaf: Certificate) -> None:
    # A serial this CA never issued.
    der = (ocsp.OCSPRequestBuilder()
           .add_certificate_by_hash(*_hashes(leaf.pub, intermediate.pub), 12345, hashes.SHA256()).build()
           .public_bytes(serialization.Encoding.DER))
    answer = single(post(client, intermediate, der))
    check_signature(answer, intermediate)
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN and answer.serial_number == 12345
    # The leaf asked of the root: the issuer hashes name the intermediate, so the root does not know it.
    answer = single(post(client, root, build_request(leaf.pub, intermediate.pub)))
    check_signature(answer, root)
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # The leaf's serial with the root as issuer: a serial the root did not issue.
    answer = single(post(client, root, build_request(leaf.pub, root.pub)))
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def _hashes(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """The CertID issuer hashes, as cryptography computes them for a certificate of ``issuer``."""
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    return request.issuer_name_hash, request.issuer_key_hash


def test_revoked_intermediate_is_answered_by_its_parent(client: Client, root: CertificateAuthority,
                                                        intermediate: CertificateAuthority) -> None:
    body = build_request(intermediate.pub, root.pub)
    assert single(post(client, root, body)).certificate_status is ocsp.OCSPCertStatus.GOOD
    intermediate.revoke("ca_compromise")
    answer = single(post(client, root, body))
    check_signature(answer, root)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.ca_compromise


def test_signed_by_the_ca_without_a_responder(client: Client, intermediate: CertificateAuthority,
                                              leaf: Certificate) -> None:
    OcspResponder.objects.filter(ca=intermediate).delete()
    answer = single(post(client, intermediate, build_request(leaf.pub, intermediate.pub)))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and answer.certificates == []
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    public_key = intermediate.pub.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and answer.signature_hash_algorithm is not None
    public_key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))


def test_try_later_without_a_responder_or_usable_key(client: Client, root: CertificateAuthority) -> None:
    ca = CertificateAuthority.objects.init(
        "locked", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256",
                                                                   password="s3cret"),
        x509_name("/CN=Locked"), parent=root,
    )
    answer = single(post(client, ca, build_request(ca.pub, ca.pub)))
    assert answer.response_status is ocsp.OCSPResponseStatus.TRY_LATER


def _two_requests(tmp_path: Path, leaf: Certificate, other: Certificate, issuer: CertificateAuthority) -> bytes:
    for name, pem in (("leaf", leaf.pem), ("other", other.pem), ("issuer", issuer.pem)):
        (tmp_path / f"{name}.pem").write_text(pem)
    subprocess.run(["openssl", "ocsp", "-issuer", "issuer.pem", "-cert", "leaf.pem", "-cert", "other.pem",
                    "-reqout", "req.der"], cwd=tmp_path, check=True, capture_output=True)
    return (tmp_path / "req.der").read_bytes()


def test_malformed_requests(client: Client, intermediate: CertificateAuthority, leaf: Certificate,
                            tmp_path: Path) -> None:
    good = build_request(leaf.pub, intermediate.pub)
    other = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=other.example.com")
    url = f"/ocsp/{intermediate.serial}/"
    attempts = [
        client.post(url, b"garbage", content_type=OCSP_REQUEST),
        client.post(url, b"", content_type=OCSP_REQUEST),
        client.post(url, good[:-3], content_type=OCSP_REQUEST),
        client.post(url, good, content_type="application/octet-stream"),
        client.post(url, {"a": "b"}),  # a form
        client.post(url, _two_requests(tmp_path, leaf, other, intermediate), content_type=OCSP_REQUEST),
        client.post(url, b"0" * 100_000, content_type=OCSP_REQUEST),
        client.post(f"{url}{base64.b64encode(good).decode()}", good, content_type=OCSP_REQUEST),
        client.get(url),
        client.get(f"{url}not*base64!"),
        client.get(f"{url}{base64.b64encode(b'garbage').decode()}"),
        client.get(f"{url}{quote(base64.b64encode(good[:-3]).decode(), safe='')}"),
    ]
    for response in attempts:
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/ocsp-response"
        assert response["Cache-Control"] == "no-store"
        assert single(response).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_unknown_ca_and_methods(client: Client, intermediate: CertificateAuthority, leaf: Certificate) -> None:
    body = build_request(leaf.pub, intermediate.pub)
    assert client.post("/ocsp/ABCDEF/", body, content_type=OCSP_REQUEST).status_code == 404
    assert client.get(f"/ocsp/ABCDEF/{base64.b64encode(body).decode()}").status_code == 404
    assert client.put(f"/ocsp/{intermediate.serial}/", body, content_type=OCSP_REQUEST).status_code == 405
    # The CA serial in the URL is case-insensitive (hex).
    lower = client.post(f"/ocsp/{intermediate.serial.lower()}/", body, content_type=OCSP_REQUEST)
    assert single(lower).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_constant_number_of_queries(client: Client, root: CertificateAuthority, intermediate: CertificateAuthority,
                                    leaf: Certificate, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    body = build_request(leaf.pub, intermediate.pub)
    with django_assert_num_queries(2):  # the CA with its responder, then the serial
        post(client, intermediate, body)
    with django_assert_num_queries(1):  # the CA, its responder and the responder key are cached
        post(client, intermediate, body)
    unknown = (ocsp.OCSPRequestBuilder()
               .add_certificate_by_hash(*_hashes(leaf.pub, intermediate.pub), 12345, hashes.SHA256())
               .build().public_bytes(serialization.Encoding.DER))
    with django_assert_num_queries(2):  # an unknown serial: no such certificate, no such CA
        assert single(post(client, intermediate, unknown)).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    with django_assert_num_queries(0):  # another issuer's certificate: known from the CertID alone
        assert single(post(client, intermediate, build_request(root.pub, root.pub))).certificate_status is (
            ocsp.OCSPCertStatus.UNKNOWN)


# --- openssl ocsp against a real server ------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_server(tmp_path_factory.mktemp("ocsp-server")) as running:
        yield running


def openssl_ocsp(server: PkiServer, folder: Path, ca_serial: str, *extra: str) -> str:
    result = subprocess.run(
        ["openssl", "ocsp", "-issuer", "intermediate.pem", "-cert", "leaf.pem", "-CAfile", "root.pem",
         "-url", f"{server.base_url}/ocsp/{ca_serial}/", *extra],
        cwd=folder, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr, result.stderr
    return result.stdout


@pytest.mark.django_db(transaction=False)
def test_openssl_ocsp_against_a_real_server(server: PkiServer, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "leaf.csr").write_bytes(make_csr("/CN=ocsp.example.com", key).public_bytes(serialization.Encoding.PEM))
    server.manage("sign_cert", "--ca", "intermediate", "--csr", str(tmp_path / "leaf.csr"),
                  "--out", str(tmp_path / "leaf.pem"))
    server.manage("dump_ca", "root", str(tmp_path / "root.pem"))
    server.manage("dump_ca", "intermediate", str(tmp_path / "intermediate.pem"))
    # The server's worker makes the delegated responders on its periodic refresh (every 5 s).
    deadline = time.monotonic() + 20
    while server.count("pki_core_ocspresponder") < 2:
        assert time.monotonic() < deadline, "the worker made no OCSP responders within 20 s"
        time.sleep(0.2)
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((tmp_path / "intermediate.pem").read_bytes())
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_url = next(d.access_location.value for d in aia
                    if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP)
    ca_serial = f"{intermediate.serial_number:X}"
    assert ocsp_url == f"{server.base_url}/ocsp/{ca_serial}/"

    out = openssl_ocsp(server, tmp_path, ca_serial)
    assert "leaf.pem: good" in out
    out = openssl_ocsp(server, tmp_path, ca_serial, "-resp_text")
    assert "WARNING: no nonce in response" not in out and "OCSP Nonce" in out  # openssl sends a nonce
    assert "OCSP Signing" in out and "OCSP No Check" in out

    server.manage("revoke_cert", f"{leaf.serial_number:X}", "--reason", "superseded")
    out = openssl_ocsp(server, tmp_path, ca_serial)
    assert "leaf.pem: revoked" in out and "Reason: superseded" in out

    # GET, as a caching client sends it (RFC 6960 Appendix A.1).
    der = build_request(leaf, intermediate, hashes.SHA1())
    response = httpx.get(f"{ocsp_url}{quote(base64.b64encode(der).decode(), safe='')}", timeout=10)
    assert response.status_code == 200 and "max-age=" in response.headers["cache-control"]
    assert ocsp.load_der_ocsp_response(response.content).certificate_status is ocsp.OCSPCertStatus.REVOKED
    # Garbage over the wire: malformedRequest, not a 500.
    response = httpx.post(ocsp_url, content=b"\x30\x03garbage", headers={"Content-Type": OCSP_REQUEST}, timeout=10)
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.content).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
