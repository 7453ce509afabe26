"""Delegated OCSP responders (RFC 6960 §4.2.2.2): their certificates and their keys.

Each CA gets a responder certificate that it issues itself with the ``ocsp`` profile
(id-kp-OCSPSigning and id-pkix-ocsp-nocheck, RFC 6960 §4.2.2.2.1). Its private key is made here
and stored in the database encrypted with AES-256-GCM under a key derived (HKDF-SHA256) from the
installation's ``SECRET_KEY``: every process of an installation shares that secret, so web
processes, which hold no CA key, can sign OCSP responses. The key is never logged or shown.

Responders are created when a CA is created (if its key is usable without a password) and renewed
by :func:`refresh_ocsp_responders`, which the worker calls periodically, when less than a third of
their lifetime is left.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pki_server.core import utils
from pki_server.core.exceptions import PkiError
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority, OcspResponder

log = logging.getLogger(__name__)

_HKDF_INFO = b"pki-server ocsp-responder-key v1"
_PREFIX = "aes256gcm-v1:"
_NONCE_SIZE = 12


class ResponderKeyError(PkiError):
    """A responder's stored key cannot be decrypted (``SECRET_KEY`` changed, or the row was altered)."""


# --- The stored key --------------------------------------------------------------------------

def _wrapping_key() -> AESGCM:
    secret = settings.SECRET_KEY
    material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(material))


def encrypt_private_key(key: utils.PrivateKey, associated_data: bytes) -> str:
    """``key`` as PKCS#8, encrypted with AES-256-GCM; ``associated_data`` binds it to its certificate."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    nonce = os.urandom(_NONCE_SIZE)
    sealed = _wrapping_key().encrypt(nonce, der, associated_data)
    return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt_private_key(stored: str, associated_data: bytes) -> utils.PrivateKey:
    if not stored.startswith(_PREFIX):
        raise ResponderKeyError("The OCSP responder key is not in a known format.")
    try:
        raw = base64.b64decode(stored[len(_PREFIX):], validate=True)
        der = _wrapping_key().decrypt(raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], associated_data)
    except (ValueError, InvalidTag):
        raise ResponderKeyError(
            "The OCSP responder key cannot be decrypted (was PKI_SECRET_KEY changed?)."
        ) from None
    key = serialization.load_der_private_key(der, password=None)
    return key  # type: ignore[return-value]


def _associated_data(certificate: Certificate) -> bytes:
    return f"ocsp-responder:{certificate.serial}".encode("ascii")


# Decrypted keys, so that each is decrypted once per process. Keyed by the row's id *and* its
# certificate's serial: a row id alone can be reused (rolled-back transactions, a restored backup).
_key_cache: dict[tuple[int, str], utils.PrivateKey] = {}
_key_cache_lock = threading.Lock()
_KEY_CACHE_SIZE = 256


def responder_key(responder: OcspResponder) -> utils.PrivateKey:
    """The responder's private key, decrypted once per process. Raises :class:`ResponderKeyError`."""
    cache_key = (responder.pk, responder.certificate.serial)
    key = _key_cache.get(cache_key)
    if key is None:
        key = decrypt_private_key(responder.private_key, _associated_data(responder.certificate))
        with _key_cache_lock:
            if len(_key_cache) >= _KEY_CACHE_SIZE:
                _key_cache.clear()
            _key_cache[cache_key] = key
    return key


# --- Which responder, and when to renew it ---------------------------------------------------

def current_responder(ca: CertificateAuthority, now: datetime | None = None) -> OcspResponder | None:
    """The CA's responder with the latest-ending valid, unrevoked certificate."""
    now = now or timezone.now()
    return (
        OcspResponder.objects.select_related("certificate")
        .filter(ca=ca, certificate__revoked=False, certificate__not_before__lte=now,
                certificate__not_after__gt=now)
        .order_by("-certificate__not_after", "-pk")
        .first()
    )


def needs_renewal(ca: CertificateAuthority, responder: OcspResponder | None, now: datetime | None = None) -> bool:
    """True without a responder, when less than a third of its lifetime is left (unless it already
    ends with the CA, so a new one would end no later), or when its key cannot be decrypted here."""
    if responder is None:
        return True
    now = now or timezone.now()
    cert = responder.certificate
    lifetime = cert.not_after - cert.not_before
    if cert.not_after - now < lifetime / 3 and cert.not_after < ca.not_after:
        return True
    try:
        responder_key(responder)
    except (ResponderKeyError, ValueError):
        return True
    return False


def _can_issue(ca: CertificateAuthority, now: datetime) -> bool:
    return ca.enabled and not ca.revoked and ca.not_before <= now < ca.not_after


def _new_key(ca: CertificateAuthority) -> utils.PrivateKey:
    """A key of the CA's key family: the CA's curve for EC, EdDSA for EdDSA, RSA otherwise."""
    ca_key = ca.pub.public_key()
    if isinstance(ca_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(type(ca_key.curve)())
    if isinstance(ca_key, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(ca_key, ed448.Ed448PublicKey):
        return ed448.Ed448PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=max(2048, settings.PKI_MIN_KEY_SIZE))


def _subject(ca: CertificateAuthority) -> x509.Name:
    """The CA's subject with the common name ``<CA name> OCSP responder`` (spaces: never a host name)."""
    kept = [attribute for attribute in ca.pub.subject if attribute.oid != NameOID.COMMON_NAME]
    return x509.Name([*kept, x509.NameAttribute(NameOID.COMMON_NAME, f"{ca.name} OCSP responder"[:64])])


def _create(ca: CertificateAuthority, options: UsePrivateKeyOptions | dict[str, Any] | None) -> OcspResponder:
    key = _new_key(ca)
    subject = _subject(ca)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, utils.signature_hash_for(key)  # type: ignore[arg-type]
    )
    certificate = Certificate.objects.create_cert(
        ca, options, csr, subject, profile="ocsp",
        not_after=timedelta(days=settings.PKI_OCSP_RESPONDER_LIFETIME),
    )
    return OcspResponder.objects.create(
        ca=ca, certificate=certificate, private_key=encrypt_private_key(key, _associated_data(certificate))
    )


def ensure_responder(
    ca: CertificateAuthority, key_backend_options: UsePrivateKeyOptions | dict[str, Any] | None = None,
    *, now: datetime | None = None,
) -> OcspResponder | None:
    """The CA's current responder, created or renewed first if it is missing or due (see
    :func:`needs_renewal`). Returns the current one (or None) when the CA cannot sign here: it is
    disabled, revoked or expired, or its key is not usable with ``key_backend_options``.
    ``now`` (default: the current time) is the time the renewal rule is judged at."""
    now = now or timezone.now()
    current = current_responder(ca, now)
    if not needs_renewal(ca, current, now):
        return current
    if not _can_issue(ca, now):
        return current
    try:
        ca.check_usable(key_backend_options)
    except PkiError as ex:
        log.debug("No OCSP responder for CA %s: its key is not usable here (%s).", ca.name, ex)
        return current
    with transaction.atomic():
        # Lock the CA row (PostgreSQL; SQLite transactions are serialised), so that two workers
        # renewing at the same moment make one responder, not two.
        CertificateAuthority.objects.select_for_update().filter(pk=ca.pk).exists()
        latest = current_responder(ca, now)
        if latest is not None and latest != current and not needs_renewal(ca, latest, now):
            return latest
        responder = _create(ca, key_backend_options)
        # Responders whose certificate has expired are of no use; their keys go with their rows.
        OcspResponder.objects.filter(ca=ca, certificate__not_after__lte=now).delete()
    log.info("CA %s has a new OCSP responder certificate (serial %s, valid until %s).",
             ca.name, responder.certificate.serial, f"{responder.certificate.not_after:%Y-%m-%d %H:%M}")
    return responder


def refresh_ocsp_responders(now: datetime | None = None) -> int:
    """Create or renew the responders of every CA that can sign here; returns how many were made.

    Meant to run periodically (the worker's sweeper), with no argument. CAs whose key is not
    usable without a password, or not present in this process, are skipped; an error with one CA
    is logged and does not stop the others. Each call costs one query per CA when nothing is due.
    """
    now = now or timezone.now()
    created = 0
    for ca in CertificateAuthority.objects.filter(enabled=True, revoked=False, not_before__lte=now,
                                                  not_after__gt=now):
        current = current_responder(ca, now)
        if not needs_renewal(ca, current, now):
            continue
        try:
            responder = ensure_responder(ca, now=now)
        except Exception:
            log.exception("Could not renew the OCSP responder of CA %s.", ca.name)
            continue
        if responder is not None and responder != current:
            created += 1
    return created


def create_responder_for_new_ca(sender: type[CertificateAuthority], ca: CertificateAuthority, **kwargs: Any) -> None:
    """``post_create_ca`` receiver: give a new CA its responder if its key is usable without a password."""
    try:
        ensure_responder(ca)
    except Exception as ex:
        # The CA exists; the worker's next refresh tries again.
        log.warning("CA %s was created without an OCSP responder: %s", ca.name, ex)
