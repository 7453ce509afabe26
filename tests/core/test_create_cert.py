"""Certificate.objects.create_cert: what it signs, what real TLS stacks say of it, what it refuses."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from django.utils import timezone

from pki_server.core import signals
from pki_server.core.exceptions import (
    CertificateAuthorityDisabled,
    KeyBackendError,
    PasswordError,
    SigningPolicyError,
)
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions, UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority
from tests.fixtures import make_csr

pytestmark = pytest.mark.django_db


def san(*names: str) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def verify_server(cert: Certificate, root: CertificateAuthority, name: str) -> None:
    """cryptography's RFC 5280 / CA/B server verifier, at a time inside the validity."""
    subject = x509.IPAddress(ipaddress.ip_address(name)) if name[0].isdigit() else x509.DNSName(name)
    verifier = (
        PolicyBuilder().store(Store([root.pub])).time(cert.not_before + timedelta(minutes=10))
        .build_server_verifier(subject)
    )
    intermediates = [ca.pub for ca in cert.ca.bundle() if ca.pk != root.pk]
    verifier.verify(cert.pub, intermediates)


def test_seed_example(intermediate: CertificateAuthority, csr: x509.CertificateSigningRequest) -> None:
    cert = Certificate.objects.create_cert(
        intermediate, UsePrivateKeyOptions(password=None), csr,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")]),
    )
    assert repr(cert) == "<Certificate: example.com>"
    assert Certificate.objects.get(serial=cert.serial) == cert
    cert.revoke()
    assert Certificate.objects.get(serial=cert.serial).revoked


def test_chain_accepted_by_cryptography_and_openssl(
    root: CertificateAuthority, intermediate: CertificateAuthority, tmp_path: Path
) -> None:
    cert = Certificate.objects.create_cert(
        intermediate, None, make_csr(), subject="/CN=www.example.com",
        extensions=[san("www.example.com", "example.com", "192.0.2.10")],
    )
    verify_server(cert, root, "www.example.com")
    verify_server(cert, root, "example.com")
    verify_server(cert, root, "192.0.2.10")
    with pytest.raises(VerificationError):
        verify_server(cert, root, "other.example.com")

    (tmp_path / "root.pem").write_text(root.pem)
    (tmp_path / "chain.pem").write_text(intermediate.pem)
    (tmp_path / "leaf.pem").write_text(cert.pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-verify_hostname", "example.com",
         "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0 and "leaf.pem: OK" in result.stdout, result.stdout + result.stderr


def test_extensions(root: CertificateAuthority, intermediate: CertificateAuthority) -> None:
    csr = make_csr(key=ec.generate_private_key(ec.SECP384R1()))
    cert = Certificate.objects.create_cert(intermediate, None, csr, "/CN=host.example.com")
    exts = cert.pub.extensions
    assert cert.pub.serial_number.bit_length() >= 64
    assert exts.get_extension_for_class(x509.BasicConstraints).critical
    assert not exts.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = exts.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment  # EC key
    assert list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert exts.get_extension_for_class(x509.SubjectAlternativeName).value == san("host.example.com")
    ski = exts.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(csr.public_key())
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = intermediate.pub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    aia = {d.access_method: d.access_location.value
           for d in exts.get_extension_for_class(x509.AuthorityInformationAccess).value}
    assert aia[x509.AuthorityInformationAccessOID.OCSP] == f"http://127.0.0.1:8000/ocsp/{intermediate.serial}/"
    assert aia[x509.AuthorityInformationAccessOID.CA_ISSUERS] == (
        f"http://127.0.0.1:8000/issuers/{intermediate.serial}.der"
    )
    crldp = exts.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crldp[0].full_name[0].value == f"http://127.0.0.1:8000/crl/{intermediate.serial}.crl"
    assert cert.pub.signature_hash_algorithm.name == "sha256"  # intermediate is P-256


def test_rsa_subject_key_gets_key_encipherment(intermediate: CertificateAuthority) -> None:
    csr = make_csr(key=rsa.generate_private_key(65537, 2048))  # type: ignore[arg-type]
    cert = Certificate.objects.create_cert(intermediate, None, csr, "/CN=rsa.example.com")
    assert cert.pub.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


@pytest.mark.parametrize(
    ("profile", "usages"),
    [
        ("webserver", [ExtendedKeyUsageOID.SERVER_AUTH]),
        ("server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("enduser", [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION,
                     ExtendedKeyUsageOID.CODE_SIGNING]),
        ("ocsp", [ExtendedKeyUsageOID.OCSP_SIGNING]),
    ],
)
def test_profiles(intermediate: CertificateAuthority, profile: str, usages: list[x509.ObjectIdentifier]) -> None:
    cert = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=Jane Doe", profile=profile,
                                           extensions=[san("jane.example.com")])
    assert cert.profile == profile
    assert list(cert.pub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usages
    has_nocheck = any(isinstance(e.value, x509.OCSPNoCheck) for e in cert.pub.extensions)
    assert has_nocheck == (profile == "ocsp")


def test_unknown_profile(intermediate: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="'nope' is not a profile"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com", profile="nope")
    assert not Certificate.objects.exists()


def test_subject_from_csr_and_cn_from_san(intermediate: CertificateAuthority) -> None:
    cert = Certificate.objects.create_cert(intermediate, None, make_csr("/O=Example/CN=csr.example.com"))
    assert cert.cn == "csr.example.com" and cert.sans == "DNS:csr.example.com"
    nameless = Certificate.objects.create_cert(
        intermediate, None, make_csr(), extensions=[san("a.example", "b.example")]
    )
    assert nameless.cn == "a.example" and nameless.sans == "DNS:a.example,DNS:b.example"


def test_csr_extensions_are_not_copied(intermediate: CertificateAuthority) -> None:
    csr = make_csr("/CN=asked.example.com", sans=["evil.example.net"])
    cert = Certificate.objects.create_cert(intermediate, None, csr)
    assert cert.sans == "DNS:asked.example.com"


def test_needs_some_name(intermediate: CertificateAuthority) -> None:
    with pytest.raises(SigningPolicyError, match="needs a subject or at least one"):
        Certificate.objects.create_cert(intermediate, None, make_csr())


def test_validity(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    default = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com")
    assert abs((default.not_after - default.not_before) - (settings.PKI_DEFAULT_EXPIRES + timedelta(minutes=5))) \
        < timedelta(seconds=5)
    assert default.not_before <= timezone.now()
    short = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com",
                                            not_after=timedelta(days=7))
    assert timedelta(days=7) <= short.not_after - short.not_before <= timedelta(days=7, minutes=6)
    capped = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com",
                                             not_after=timedelta(days=365 * 30))
    assert capped.not_after == intermediate.not_after
    with pytest.raises(ValueError, match="timezone-aware"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com",
                                        not_after=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="must be later than not_before"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com",
                                        not_after=timezone.now() - timedelta(days=1))
    assert Certificate.objects.count() == 3


def test_disabled_ca_refuses(intermediate: CertificateAuthority) -> None:
    intermediate.enabled = False
    intermediate.save()
    with pytest.raises(CertificateAuthorityDisabled, match="'intermediate' is disabled"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com")
    assert not Certificate.objects.exists()


def test_revoked_ca_refuses(intermediate: CertificateAuthority) -> None:
    intermediate.revoke("key_compromise")
    with pytest.raises(CertificateAuthorityDisabled, match="revoked"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=a.example.com")


def test_password_protected_ca(root: CertificateAuthority) -> None:
    ca = CertificateAuthority.objects.init(
        "locked", key_backends["default"], CreatePrivateKeyOptions(elliptic_curve="P-256", password=b"pw"),
        "/CN=Locked", parent=root,
    )
    with pytest.raises(PasswordError, match="a password is required"):
        Certificate.objects.create_cert(ca, None, make_csr(), "/CN=a.example.com")
    with pytest.raises(PasswordError, match="Wrong password"):
        Certificate.objects.create_cert(ca, UsePrivateKeyOptions(password="bad"), make_csr(), "/CN=a.example.com")
    assert not Certificate.objects.exists()
    cert = Certificate.objects.create_cert(ca, {"password": "pw"}, make_csr(), "/CN=a.example.com")
    cert.pub.verify_directly_issued_by(ca.pub)


def test_the_key_is_read_once_while_its_file_is_there(root: CertificateAuthority,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded CA key is kept (its file is named after the key, never rewritten); a password still gates it."""
    ca = CertificateAuthority.objects.init(
        "kept", key_backends["default"], CreatePrivateKeyOptions(elliptic_curve="P-256", password=b"pw"),
        "/CN=Kept", parent=root,
    )
    backend = ca.key_backend
    reads: list[str] = []
    original = type(backend)._read_private_key

    def read(ca: CertificateAuthority, storage: object, path: str, options: UsePrivateKeyOptions) -> object:
        reads.append(path)
        return original(ca, storage, path, options)

    monkeypatch.setattr(type(backend), "_read_private_key", staticmethod(read))
    for _ in range(3):
        Certificate.objects.create_cert(ca, {"password": "pw"}, make_csr(), "/CN=a.example.com")
    assert len(reads) == 1
    # Another password is not served from the cache: it is tried on the file, and fails.
    with pytest.raises(PasswordError, match="Wrong password"):
        Certificate.objects.create_cert(ca, {"password": "bad"}, make_csr(), "/CN=a.example.com")
    with pytest.raises(PasswordError, match="a password is required"):
        Certificate.objects.create_cert(ca, None, make_csr(), "/CN=a.example.com")
    # A key file that went away is missed at once, not after the cache's time.
    path = Path(backend.storage.path(ca.key_backend_options["path"]))
    away = path.rename(path.with_suffix(".away"))
    with pytest.raises(KeyBackendError, match="missing"):
        Certificate.objects.create_cert(ca, {"password": "pw"}, make_csr(), "/CN=a.example.com")
    away.rename(path)
    Certificate.objects.create_cert(ca, {"password": "pw"}, make_csr(), "/CN=a.example.com")
    assert Certificate.objects.filter(ca=ca).count() == 4


def test_bad_csr_signature(intermediate: CertificateAuthority) -> None:
    good = make_csr("/CN=a.example.com")
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # flip bits in the signature
    tampered = x509.load_der_x509_csr(bytes(der))
    # The good one first: its verdict is remembered per CSR, and must not pass for the tampered one.
    Certificate.objects.create_cert(intermediate, None, good)
    with pytest.raises(SigningPolicyError, match="signature is not valid"):
        Certificate.objects.create_cert(intermediate, None, tampered)
    with pytest.raises(SigningPolicyError, match="signature is not valid"):  # and stays refused
        Certificate.objects.create_cert(intermediate, None, x509.load_der_x509_csr(bytes(der)))


def test_what_is_kept_per_ca_follows_the_ca_and_its_urls(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    """The CA's parsed certificate and the AIA/CRL extensions it adds are built once, per CA and per URL."""
    first = CertificateAuthority.objects.get(pk=intermediate.pk)
    second = CertificateAuthority.objects.get(pk=intermediate.pk)
    assert first is not second and first.pub is second.pub
    root = CertificateAuthority.objects.get(pk=intermediate.parent_id)
    assert root.pub is not first.pub and root.pub.subject != first.pub.subject

    def urls(cert: Certificate) -> tuple[str, str]:
        aia = cert.pub.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        crldp = cert.pub.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        ocsp = next(d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.OCSP)
        return ocsp, crldp[0].full_name[0].value  # type: ignore[index]

    before = urls(Certificate.objects.create_cert(first, None, make_csr(), "/CN=a.example.com"))
    assert before[0].startswith(settings.PKI_BASE_URL + "/ocsp/")
    settings.PKI_BASE_URL = "https://pki.example.net"
    after = urls(Certificate.objects.create_cert(second, None, make_csr(), "/CN=a.example.com"))
    assert after == (f"https://pki.example.net/ocsp/{first.serial}/", f"https://pki.example.net/crl/{first.serial}.crl")


def test_weak_key_refused(intermediate: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(weak, hashes.SHA256())
    with pytest.raises(SigningPolicyError, match="RSA key of 1024 bits; the minimum is 2048"):
        Certificate.objects.create_cert(intermediate, None, csr, "/CN=a.example.com")
    p192 = ec.generate_private_key(ec.SECP192R1()) if hasattr(ec, "SECP192R1") else None
    if p192 is not None:
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(p192, hashes.SHA256())
        with pytest.raises(SigningPolicyError, match="curve"):
            Certificate.objects.create_cert(intermediate, None, csr, "/CN=a.example.com")


def test_cannot_sign_a_ca(intermediate: CertificateAuthority) -> None:
    with pytest.raises(SigningPolicyError, match="end-entity"):
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=x.example.com",
                                        extensions=[x509.BasicConstraints(ca=True, path_length=None)])


def test_name_constraints(root: CertificateAuthority) -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("corp.example"), x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
        excluded_subtrees=[x509.DNSName("secret.corp.example")],
    )
    ca = CertificateAuthority.objects.init(
        "corp", key_backends["default"], CreatePrivateKeyOptions(elliptic_curve="P-256"), "/CN=Corp",
        parent=root, extensions=[constraints],
    )
    ok = Certificate.objects.create_cert(ca, None, make_csr(), "/CN=www.corp.example",
                                         extensions=[san("www.corp.example", "10.1.2.3")])
    verify_server(ok, root, "www.corp.example")
    for names, message in [
        (["www.example.org"], "permit only"),
        (["corp.example.org"], "permit only"),
        (["a.secret.corp.example"], "excluded"),
        (["www.corp.example", "192.168.0.1"], "IP:192.168.0.1"),
    ]:
        with pytest.raises(SigningPolicyError, match=message):
            Certificate.objects.create_cert(ca, None, make_csr(), extensions=[san(*names)])
    assert Certificate.objects.count() == 1


def test_sign_signals(intermediate: CertificateAuthority) -> None:
    seen: list[tuple[str, dict]] = []

    def pre(sender, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(("pre", {"sender": sender, **kwargs}))

    def post(sender, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(("post", {"sender": sender, **kwargs}))

    signals.pre_sign_cert.connect(pre)
    signals.post_issue_cert.connect(post)
    try:
        cert = Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=s.example.com")
    finally:
        signals.pre_sign_cert.disconnect(pre)
        signals.post_issue_cert.disconnect(post)
    assert [kind for kind, _ in seen] == ["pre", "post"]
    pre_args = seen[0][1]
    assert pre_args["sender"] is Certificate and pre_args["ca"] == intermediate
    assert pre_args["profile"].name == "webserver" and pre_args["not_after"] == cert.not_after
    assert any(isinstance(e.value, x509.SubjectAlternativeName) for e in pre_args["extensions"])
    assert seen[1][1] == {"sender": Certificate, "cert": cert, "signal": signals.post_issue_cert}


def test_issuer_certificate_view(client, intermediate: CertificateAuthority) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/issuers/{intermediate.serial}.der")
    assert response.status_code == 200 and response["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.content) == intermediate.pub
    assert client.get(f"/issuers/{intermediate.serial.lower()}.der").status_code == 200
    assert client.get("/issuers/ABCDEF.der").status_code == 404
    assert client.post(f"/issuers/{intermediate.serial}.der").status_code == 405
