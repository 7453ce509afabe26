"""CertificateAuthority.objects.init: roots, intermediates, key types, and nothing written on failure."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from django.utils import timezone

from pki_server.core import signals
from pki_server.core.exceptions import CertificateAuthorityDisabled, PasswordError, PkiError, SigningPolicyError
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions, UsePrivateKeyOptions
from pki_server.core.models import CertificateAuthority
from pki_server.core.utils import x509_name

pytestmark = pytest.mark.django_db


def key_files(location: Path) -> list[Path]:
    return sorted(p for p in location.rglob("*") if p.is_file()) if location.exists() else []


def init(name: str = "ca", options: CreatePrivateKeyOptions | None = None, **kwargs):  # type: ignore[no-untyped-def]
    return CertificateAuthority.objects.init(
        name, key_backends["default"], options or CreatePrivateKeyOptions(elliptic_curve="P-256"),
        kwargs.pop("subject", f"/CN={name}"), **kwargs,
    )


@pytest.mark.parametrize(
    ("options", "key_class", "detail"),
    [
        (CreatePrivateKeyOptions(key_size=2048), rsa.RSAPublicKey, 2048),
        (CreatePrivateKeyOptions(elliptic_curve="P-256"), ec.EllipticCurvePublicKey, "secp256r1"),
        (CreatePrivateKeyOptions(elliptic_curve="P-384"), ec.EllipticCurvePublicKey, "secp384r1"),
        (CreatePrivateKeyOptions(elliptic_curve="secp521r1"), ec.EllipticCurvePublicKey, "secp521r1"),
        (CreatePrivateKeyOptions(key_type="Ed25519"), ed25519.Ed25519PublicKey, None),
        (CreatePrivateKeyOptions(key_type="Ed448"), ed448.Ed448PublicKey, None),
    ],
)
def test_root_key_types(options, key_class, detail, key_storage: Path) -> None:  # type: ignore[no-untyped-def]
    ca = init("root", options)
    key = ca.pub.public_key()
    assert isinstance(key, key_class)
    if isinstance(key, rsa.RSAPublicKey):
        assert key.key_size == detail
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert key.curve.name == detail
    assert ca.pub.subject == ca.pub.issuer == x509_name("/CN=root")
    basic = ca.pub.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.pub.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ca.pub.verify_directly_issued_by(ca.pub)
    files = key_files(key_storage)
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert ca.key_backend_options == {"path": str(files[0].relative_to(key_storage))}


def test_key_type_argument_overrides_options_default() -> None:
    ca = init("ec", CreatePrivateKeyOptions(path="ca"), key_type="EC")
    assert isinstance(ca.pub.public_key(), ec.EllipticCurvePublicKey)


def test_default_key_is_rsa_of_default_size(settings) -> None:  # type: ignore[no-untyped-def]
    ca = init("rsa", CreatePrivateKeyOptions(password=None, path="ca"))
    key = ca.pub.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == settings.PKI_DEFAULT_KEY_SIZE


def test_min_key_size_is_enforced(key_storage: Path) -> None:
    with pytest.raises(ValueError, match="below the minimum key size of 2048"):
        init("small", CreatePrivateKeyOptions(password=None, path="ca", key_size=1024))
    assert not CertificateAuthority.objects.exists() and not key_files(key_storage)


def test_seed_example_with_lowered_minimum(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_MIN_KEY_SIZE = 1024
    key_backend_options = CreatePrivateKeyOptions(password=None, path="ca", key_size=1024)
    ca = CertificateAuthority.objects.init(
        name="ca-two", key_backend=key_backends["default"], key_backend_options=key_backend_options,
        subject=x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ca.example.com")]),
    )
    assert repr(ca) == "<CertificateAuthority: ca-two>"
    assert ca.pub.public_key().key_size == 1024  # type: ignore[union-attr]
    lifetime = ca.not_after - timezone.now()
    assert timedelta(days=3649) < lifetime <= settings.PKI_CA_DEFAULT_EXPIRES + timedelta(minutes=1)


def test_intermediate(root: CertificateAuthority) -> None:
    ca = init("sub", parent=root, subject="/C=AT/CN=Sub CA")
    assert ca.parent == root and ca.pub.issuer == root.pub.subject
    ca.pub.verify_directly_issued_by(root.pub)
    assert ca.path_length == 0  # root has 1, so below it 0
    aki = ca.pub.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.pub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    aia = ca.pub.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {root.ocsp_url, root.issuer_url}
    crldp = ca.pub.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crldp[0].full_name[0].value == root.crl_url
    assert ca.not_after <= root.not_after


def test_intermediate_signed_through_parent_password() -> None:
    parent = init("locked", CreatePrivateKeyOptions(elliptic_curve="P-256", password="s3cret"))
    with pytest.raises(PasswordError, match="a password is required"):
        init("child1", parent=parent)
    with pytest.raises(PasswordError, match="Wrong password"):
        init("child2", parent=parent, use_parent_private_key_options=UsePrivateKeyOptions(password="nope"))
    assert CertificateAuthority.objects.count() == 1
    child = init("child3", parent=parent, use_parent_private_key_options=UsePrivateKeyOptions(password="s3cret"))
    child.pub.verify_directly_issued_by(parent.pub)


def test_path_length_rules(root: CertificateAuthority) -> None:
    with pytest.raises(SigningPolicyError, match="less than the parent's"):
        init("too-long", parent=root, path_length=1)
    leaf_ca = init("zero", parent=root)
    with pytest.raises(SigningPolicyError, match="path length of 0"):
        init("below-zero", parent=leaf_ca)
    assert set(CertificateAuthority.objects.values_list("name", flat=True)) == {"root", "zero"}


def test_validity_capped_by_parent(root: CertificateAuthority) -> None:
    ca = init("long", parent=root, not_after=timedelta(days=365 * 50))
    assert ca.not_after == root.not_after


def test_disabled_parent_refuses(root: CertificateAuthority, key_storage: Path) -> None:
    root.enabled = False
    root.save()
    before = key_files(key_storage)
    with pytest.raises(CertificateAuthorityDisabled, match="disabled"):
        init("child", parent=root)
    assert key_files(key_storage) == before


def test_duplicate_name_writes_no_key(root: CertificateAuthority, key_storage: Path) -> None:
    before = key_files(key_storage)
    with pytest.raises(PkiError, match="exists already"):
        init("root")
    assert key_files(key_storage) == before


def test_pre_create_ca_receiver_can_veto(key_storage: Path) -> None:
    def refuse(sender, **kwargs):  # type: ignore[no-untyped-def]
        raise PkiError("vetoed")

    signals.pre_create_ca.connect(refuse)
    try:
        with pytest.raises(PkiError, match="vetoed"):
            init("vetoed")
    finally:
        signals.pre_create_ca.disconnect(refuse)
    assert not key_files(key_storage) and not CertificateAuthority.objects.exists()


def test_race_on_name_after_key_creation_removes_key(key_storage: Path) -> None:
    """Another process creates a CA of the same name while this one makes its key."""

    def concurrent_create(sender, name, **kwargs):  # type: ignore[no-untyped-def]
        signals.pre_create_ca.disconnect(concurrent_create)
        init(name)

    signals.pre_create_ca.connect(concurrent_create)
    try:
        with pytest.raises(PkiError, match="exists already"):
            init("contested")
    finally:
        signals.pre_create_ca.disconnect(concurrent_create)
    assert CertificateAuthority.objects.count() == 1
    assert len(key_files(key_storage)) == 1  # only the winner's key


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="key_size applies to RSA keys only"):
        CreatePrivateKeyOptions(key_size=2048, elliptic_curve="P-256")
    with pytest.raises(ValueError, match="not a supported curve"):
        CreatePrivateKeyOptions(elliptic_curve="P-192")
    with pytest.raises(ValueError, match="not a key type"):
        CreatePrivateKeyOptions(key_type="DSA")
    with pytest.raises(ValueError, match="relative folder"):
        CreatePrivateKeyOptions(path="../etc")
    with pytest.raises(ValueError, match="power of two"):
        CreatePrivateKeyOptions(key_size=3000)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "-dash", "x" * 65])
def test_bad_names_refused(name: str, key_storage: Path) -> None:
    with pytest.raises(ValueError, match="is not a CA name"):
        init(name)
    assert not key_files(key_storage)


def test_empty_subject_refused() -> None:
    with pytest.raises(ValueError, match="needs a subject"):
        init("nameless", subject="")


def test_db_key_backend() -> None:
    from pki_server.core.key_backends.db import CreatePrivateKeyOptions as DBOptions

    ca = CertificateAuthority.objects.init(
        "db-ca", key_backends["db"], DBOptions(elliptic_curve="P-256", password="pw"), "/CN=DB CA"
    )
    assert "ENCRYPTED PRIVATE KEY" in ca.key_backend_options["private_key"]
    ca.check_usable(UsePrivateKeyOptions(password="pw"))
    with pytest.raises(PasswordError):
        ca.check_usable(UsePrivateKeyOptions(password="wrong"))
    reloaded = CertificateAuthority.objects.get(name="db-ca")
    assert reloaded.key_backend.alias == "db"


def test_name_constraints_extension_is_kept(root: CertificateAuthority) -> None:
    constraints = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)
    ca = init("constrained", parent=root, extensions=[constraints])
    ext = ca.pub.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical and ext.value == constraints
