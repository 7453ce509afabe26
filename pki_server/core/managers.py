"""Creating CAs and signing certificates: ``CertificateAuthority.objects.init`` and
``Certificate.objects.create_cert``. Both check everything before they sign, and write nothing
when they fail."""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from pki_server import prepared
from pki_server.core import extensions as ext
from pki_server.core import signals, utils
from pki_server.core.exceptions import CertificateAuthorityDisabled, PkiError, SigningPolicyError
from pki_server.core.key_backends.base import BaseCreatePrivateKeyOptions, KeyBackend, UsePrivateKeyOptions
from pki_server.core.profiles import Profile, get_profile

if TYPE_CHECKING:
    from pki_server.core.models import Certificate, CertificateAuthority

log = logging.getLogger(__name__)

# Not-before is set a little in the past, so that clients with a slow clock accept a new certificate.
BACKDATE = timedelta(minutes=5)
_SIGNATURE_HASHES_REFUSED = (hashes.SHA1, hashes.MD5)
_CA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def random_serial() -> int:
    """A positive serial of 159 random bits (RFC 5280 allows 20 octets; CA/B asks for 64+ bits)."""
    return secrets.randbits(159) | (1 << 158)


def _resolve_not_after(
    not_after: datetime | timedelta | None, default: timedelta, not_before: datetime
) -> datetime:
    if not_after is None:
        return (not_before + BACKDATE + default).replace(microsecond=0)
    if isinstance(not_after, timedelta):
        if not_after <= timedelta(0):
            raise ValueError("not_after must be a positive timedelta.")
        return (not_before + BACKDATE + not_after).replace(microsecond=0)
    if not isinstance(not_after, datetime):
        raise TypeError(f"not_after takes a datetime or timedelta, not {type(not_after).__name__}.")
    if timezone.is_naive(not_after):
        raise ValueError("not_after must be a timezone-aware datetime.")
    return not_after.replace(microsecond=0)


def check_issuer(ca: CertificateAuthority, now: datetime) -> None:
    """Refuse a CA that signs nothing: disabled, revoked or expired (certificates and CRLs alike)."""
    if not ca.enabled:
        raise CertificateAuthorityDisabled(f"CA {ca.name!r} is disabled and signs nothing.")
    if ca.revoked:
        raise CertificateAuthorityDisabled(f"CA {ca.name!r} is revoked and signs nothing.")
    if ca.not_after <= now:
        raise CertificateAuthorityDisabled(f"CA {ca.name!r} expired on {ca.not_after:%Y-%m-%d}.")


def _cap_validity(ca: CertificateAuthority, not_before: datetime, not_after: datetime) -> datetime:
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after:%Y-%m-%d %H:%M}) must be later than not_before.")
    if not_after > ca.not_after:
        log.debug("Capping validity at the end of CA %s's validity (%s).", ca.name, ca.not_after)
        return ca.not_after
    return not_after


def check_public_key(public_key: object, what: str) -> None:
    """Refuse key types and sizes the CA does not certify."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < settings.PKI_MIN_KEY_SIZE:
            raise SigningPolicyError(
                f"{what} is an RSA key of {public_key.key_size} bits; the minimum is "
                f"{settings.PKI_MIN_KEY_SIZE} bits."
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in utils.ELLIPTIC_CURVES:
            raise SigningPolicyError(f"{what} uses the curve {public_key.curve.name}, which is not allowed.")
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return
    raise SigningPolicyError(f"{what} is a {utils.key_type_of(public_key)} key, which is not allowed.")


@lru_cache(maxsize=256)
def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the CSR's self-signature verifies, remembered per CSR (equal CSRs are equal DER).

    ACME checks a CSR when the order is finalized and create_cert checks it again when it signs.
    """
    try:
        return bool(csr.is_signature_valid)
    except Exception:  # unsupported algorithm, malformed key
        return False


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    if not isinstance(csr, x509.CertificateSigningRequest):
        raise TypeError(f"csr must be an x509.CertificateSigningRequest, not {type(csr).__name__}.")
    if not csr_signature_valid(csr):
        raise SigningPolicyError("The CSR's signature is not valid.")
    algorithm = csr.signature_hash_algorithm
    if isinstance(algorithm, _SIGNATURE_HASHES_REFUSED):
        raise SigningPolicyError(f"The CSR is signed with {algorithm.name.upper()}, which is not allowed.")
    check_public_key(csr.public_key(), "The CSR's key")


def _ski(public_key: Any) -> x509.Extension[x509.ExtensionType]:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return x509.Extension(ski.oid, False, ski)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, not_before: datetime, not_after: datetime,
    extensions: Iterable[x509.Extension[x509.ExtensionType]],
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder


class CertificateAuthorityManager(models.Manager["CertificateAuthority"]):
    def default_acme(self) -> CertificateAuthority | None:
        """The CA that ``/acme/directory`` serves, if exactly one CA has ACME on."""
        cas = list(self.filter(acme_enabled=True, enabled=True).select_related("parent")[:2])
        return cas[0] if len(cas) == 1 else None

    def init(
        self,
        name: str,
        key_backend: KeyBackend,
        key_backend_options: BaseCreatePrivateKeyOptions,
        subject: x509.Name | str,
        *,
        parent: CertificateAuthority | None = None,
        use_parent_private_key_options: UsePrivateKeyOptions | None = None,
        not_after: datetime | timedelta | None = None,
        key_type: str | None = None,
        path_length: int | None = None,
        extensions: Iterable[x509.Extension[x509.ExtensionType] | x509.ExtensionType] | None = None,
        acme_enabled: bool = False,
        acme_requires_contact: bool = False,
        acme_profile: str = "webserver",
        acme_terms_of_service: str = "",
        acme_website: str = "",
        acme_caa_identities: str = "",
    ) -> CertificateAuthority:
        """Create a CA: a root, or an intermediate signed by ``parent`` through the parent's key backend.

        ``key_type`` (``RSA``, ``EC``, ``Ed25519``, ``Ed448``) defaults to what the options imply.
        ``not_after`` (a datetime or a timedelta) defaults to ``PKI_CA_DEFAULT_EXPIRES`` and never
        goes beyond the parent's.
        """
        name = (name or "").strip()
        if not _CA_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a CA name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
                " (it appears in URLs)."
            )
        if self.filter(name=name).exists():
            raise PkiError(f"A CA named {name!r} exists already.")
        subject = utils.x509_name(subject)
        if not len(subject):
            raise ValueError("A CA needs a subject.")
        if key_type is not None and utils.parse_key_type(key_type) != key_backend_options.key_type:
            key_backend_options = dataclasses.replace(key_backend_options, key_type=key_type)
        if path_length is not None and path_length < 0:
            raise ValueError("path_length must be 0 or more.")
        get_profile(acme_profile)

        now = timezone.now()
        not_before = (now - BACKDATE).replace(microsecond=0)
        expires = _resolve_not_after(not_after, settings.PKI_CA_DEFAULT_EXPIRES, not_before)
        parent_options: UsePrivateKeyOptions | None = None
        if parent is not None:
            check_issuer(parent, now)
            if parent.path_length is not None:
                if parent.path_length == 0:
                    raise SigningPolicyError(f"CA {parent.name!r} has a path length of 0: it cannot sign CAs.")
                if path_length is None:
                    path_length = parent.path_length - 1
                elif path_length >= parent.path_length:
                    raise SigningPolicyError(
                        f"path_length must be less than the parent's ({parent.path_length})."
                    )
            expires = _cap_validity(parent, not_before, expires)
            parent_options = parent.key_backend.get_use_private_key_options(use_parent_private_key_options)
            parent.key_backend.check_usable(parent, parent_options)  # a wrong password fails before any write
        elif expires <= not_before:
            raise ValueError("not_after must be in the future.")

        basic = x509.BasicConstraints(ca=True, path_length=path_length)
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        )
        defaults: list[x509.Extension[x509.ExtensionType]] = [
            x509.Extension(basic.oid, True, basic),
            x509.Extension(usage.oid, True, usage),
        ]
        if parent is not None:
            defaults += ext.issued_by_extensions(parent)
        all_extensions = ext.merge(defaults, extensions or ())

        signals.pre_create_ca.send(
            sender=self.model, name=name, subject=subject, parent=parent, key_backend=key_backend,
            key_type=key_backend_options.key_type, not_after=expires, extensions=all_extensions,
        )
        public_key, stored = key_backend.create_private_key(key_backend_options, label=name)
        try:
            ca = self.model(
                name=name, parent=parent, path_length=path_length, key_backend_alias=key_backend.alias,
                key_backend_options=stored, acme_enabled=acme_enabled,
                acme_requires_contact=acme_requires_contact, acme_profile=acme_profile,
                acme_terms_of_service=acme_terms_of_service, acme_website=acme_website,
                acme_caa_identities=acme_caa_identities,
            )
            ski = _ski(public_key)
            if parent is None:
                aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)  # type: ignore[arg-type]
                all_extensions = ext.merge([x509.Extension(aki.oid, False, aki)], all_extensions)
            builder = _builder(subject, parent.pub.subject if parent else subject, public_key, not_before,
                               expires, ext.merge(all_extensions, [ski]))
            if parent is None:
                own_options = UsePrivateKeyOptions(password=key_backend_options.password)
                certificate = key_backend.sign_certificate(ca, own_options, builder)
            else:
                assert parent_options is not None
                certificate = parent.key_backend.sign_certificate(parent, parent_options, builder)
            ca._set_certificate(certificate)
            with transaction.atomic():
                ca.save(force_insert=True)
        except IntegrityError:
            key_backend.delete_private_key(stored)
            raise PkiError(f"A CA named {name!r} exists already.") from None
        except BaseException:
            key_backend.delete_private_key(stored)
            raise
        log.info("Created CA %s (%s, serial %s).", ca.name, ca.key_type, ca.serial)
        signals.post_create_ca.send(sender=self.model, ca=ca)
        return ca


class CertificateManager(models.Manager["Certificate"]):
    def create_cert(
        self,
        ca: CertificateAuthority,
        key_backend_options: UsePrivateKeyOptions | dict[str, Any] | None,
        csr: x509.CertificateSigningRequest,
        subject: x509.Name | str | None = None,
        *,
        profile: str | Profile | None = None,
        not_before: datetime | None = None,
        not_after: datetime | timedelta | None = None,
        extensions: Iterable[x509.Extension[x509.ExtensionType] | x509.ExtensionType] | None = None,
    ) -> Certificate:
        """Sign ``csr``'s public key with ``ca`` and save the certificate.

        ``subject`` defaults to the CSR's subject. Names come from a SubjectAlternativeName in
        ``extensions`` (the CSR's own extensions are not copied); a common name that is a host
        name or IP address is added to them, and a certificate without a common name gets the
        first name as one. ``profile`` is a name from ``PROFILES`` (default ``PKI_DEFAULT_PROFILE``).
        """
        now = timezone.now()
        check_issuer(ca, now)
        profile_obj = get_profile(profile)
        check_csr(csr)
        options = ca.key_backend.get_use_private_key_options(key_backend_options)
        public_key = csr.public_key()

        subject_name = utils.x509_name(subject) if subject is not None else csr.subject
        overrides = list(extensions or ())
        defaults = profile_obj.extensions(public_key) + ext.issued_by_extensions(ca) + [_ski(public_key)]
        merged = ext.merge(defaults, overrides)
        basic = next((e.value for e in merged if isinstance(e.value, x509.BasicConstraints)), None)
        if basic is not None and basic.ca:
            raise SigningPolicyError("create_cert signs end-entity certificates; use init() to create a CA.")

        # Subject alternative names: the given ones plus the common name, if it names a host.
        san_value = next((e.value for e in merged if isinstance(e.value, x509.SubjectAlternativeName)), None)
        names: list[x509.GeneralName] = list(san_value) if san_value is not None else []
        cn = utils.common_name(subject_name)
        cn_name = ext.general_name_for_common_name(cn) if cn else None
        if cn_name is not None and cn_name not in names:
            names.insert(0, cn_name)
        if not cn and names and isinstance(names[0], x509.DNSName | x509.IPAddress):
            first = str(names[0].value)
            if len(first) <= 64:
                subject_name = x509.Name([*subject_name, x509.NameAttribute(NameOID.COMMON_NAME, first)])
        if not names and not len(subject_name):
            raise SigningPolicyError("A certificate needs a subject or at least one subject alternative name.")
        if names:
            san = x509.SubjectAlternativeName(names)
            merged = ext.merge(merged, [x509.Extension(san.oid, not len(subject_name), san)])
        ext.check_name_constraints(ca, names)

        start = not_before or now - BACKDATE
        if timezone.is_naive(start):
            raise ValueError("not_before must be a timezone-aware datetime.")
        start = max(start, ca.not_before).replace(microsecond=0)
        expires = _cap_validity(ca, start, _resolve_not_after(not_after, profile_obj.default_expires, start))

        signals.pre_sign_cert.send(
            sender=self.model, ca=ca, csr=csr, subject=subject_name, profile=profile_obj,
            not_before=start, not_after=expires, extensions=merged,
        )
        builder = _builder(subject_name, ca.pub.subject, public_key, start, expires, merged)
        certificate = ca.key_backend.sign_certificate(ca, options, builder)

        cert = self.model(ca=ca, profile=profile_obj.name,
                          csr=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"))
        cert._set_certificate(certificate)
        # Model.save()'s query building was a quarter of issuing; the INSERT it makes is built once.
        prepared.insert([cert], send_signals=True)
        log.info("CA %s issued %s (serial %s).", ca.name, cert, cert.serial)
        signals.post_issue_cert.send(sender=self.model, cert=cert)
        return cert
