"""Shared fixtures: real CAs with real keys in the per-test key storage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions, UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.utils import x509_name


@pytest.fixture(autouse=True)
def key_storage(tmp_path: Path, settings) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """Each test writes keys to its own folder, and gets the policy defaults of a fresh install."""
    location = tmp_path / "keys"
    settings.STORAGES = {
        **settings.STORAGES,
        "pki_keys": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "file_permissions_mode": 0o600,
                        "directory_permissions_mode": 0o700},
        },
    }
    settings.PKI_DEFAULT_KEY_SIZE = 2048  # keeps key generation fast; production default is 4096
    yield location


def make_csr(subject: str = "", key: ec.EllipticCurvePrivateKey | None = None,
             sans: list[str] | None = None) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509_name(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), False)
    return builder.sign(key, hashes.SHA256())


def issue(ca: CertificateAuthority, cn: str, *, sans: list[str] | None = None, profile: str | None = None,
          expires_in: timedelta | None = None) -> Certificate:
    """A real certificate; ``expires_in`` then moves its recorded ``not_after`` (for expiry filters and views)."""
    extensions = [x509.SubjectAlternativeName([x509.DNSName(name) for name in sans])] if sans else None
    cert = Certificate.objects.create_cert(ca, UsePrivateKeyOptions(), make_csr(), subject=f"/CN={cn}",
                                           profile=profile, extensions=extensions)
    if expires_in is not None:
        Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() + expires_in)
        cert.refresh_from_db()
    return cert


@pytest.fixture
def csr() -> x509.CertificateSigningRequest:
    return make_csr()


@pytest.fixture
def root(db: None) -> CertificateAuthority:
    return CertificateAuthority.objects.init(
        "root", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-384"),
        x509_name("/C=AT/O=Example/CN=Example Root"), path_length=1,
    )


@pytest.fixture
def intermediate(root: CertificateAuthority) -> CertificateAuthority:
    return CertificateAuthority.objects.init(
        "intermediate", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256"),
        x509_name("/C=AT/O=Example/CN=Example Intermediate"), parent=root, acme_enabled=True,
    )
