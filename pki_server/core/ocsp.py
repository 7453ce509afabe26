"""OCSP responses (RFC 6960), signed by a CA's delegated responder (see ocsp_responder.py).

:func:`respond` answers one DER-encoded OCSPRequest for the CA with a given serial. It does a
constant number of indexed queries whatever the number of certificates: the CA with its current
responder, then the requested serial (a certificate, or an intermediate CA the CA signed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from pki_server.core import utils
from pki_server.core.exceptions import PkiError
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority, OcspResponder
from pki_server.core.ocsp_responder import (
    ResponderKeyError,
    ensure_responder,
    refresh_ocsp_responders,
    responder_key,
)

__all__ = ["OcspAnswer", "clear_caches", "ensure_responder", "refresh_ocsp_responders", "respond", "unsuccessful"]

log = logging.getLogger(__name__)

# CertID hash algorithms accepted (RFC 6960 §4.1.1; RFC 5019 clients use SHA-1, others SHA-256).
_CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class OcspAnswer:
    """A DER-encoded OCSPResponse; the update times are set for successful responses only."""

    der: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None

    @property
    def successful(self) -> bool:
        return self.this_update is not None


def unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    """An unsigned error response (RFC 6960 §2.3): malformedRequest, internalError, tryLater …"""
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return OcspAnswer(response.public_bytes(serialization.Encoding.DER))


def malformed() -> OcspAnswer:
    return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


# --- Which CA, and which CertIDs name it -----------------------------------------------------

def _public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (without the unused-bits octet): what
    issuerKeyHash hashes (RFC 6960 §4.1.1)."""
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)

    def header(data: bytes, offset: int) -> tuple[int, int]:  # -> (start of content, length)
        first = data[offset + 1]
        if first < 0x80:
            return offset + 2, first
        count = first & 0x7F
        return offset + 2 + count, int.from_bytes(data[offset + 2:offset + 2 + count], "big")

    content, _ = header(spki, 0)  # SubjectPublicKeyInfo SEQUENCE
    algorithm_start, algorithm_length = header(spki, content)  # AlgorithmIdentifier SEQUENCE
    bits_start, bits_length = header(spki, algorithm_start + algorithm_length)  # BIT STRING
    return spki[bits_start + 1:bits_start + bits_length]


_issuer_hashes: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def issuer_hashes(ca: CertificateAuthority, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of ``ca`` with ``algorithm``, cached per CA certificate."""
    cache_key = (ca.serial, algorithm.name)
    found = _issuer_hashes.get(cache_key)
    if found is None:
        name_hash = hashes.Hash(algorithm)
        name_hash.update(ca.pub.subject.public_bytes())
        key_hash = hashes.Hash(algorithm)
        key_hash.update(_public_key_bits(ca.pub))
        found = (name_hash.finalize(), key_hash.finalize())
        if len(_issuer_hashes) > 1024:
            _issuer_hashes.clear()
        _issuer_hashes[cache_key] = found
    return found


# The CA and its current responder by CA serial, for a short while: renewal leaves the previous
# responder valid for a third of its lifetime, so a responder from this cache is always still good.
_CA_CACHE_SECONDS = 30.0
_ca_cache: dict[str, tuple[float, CertificateAuthority, OcspResponder | None]] = {}


def clear_caches() -> None:
    """Forget cached CAs and responders (tests; a process picks up changes by itself within 30 s)."""
    _ca_cache.clear()
    _issuer_hashes.clear()


def _find_responder(ca_serial: str, now: datetime) -> tuple[CertificateAuthority, OcspResponder | None] | None:
    """The CA with this serial and its current responder: one query, then cached for a while."""
    cached = _ca_cache.get(ca_serial)
    if cached is not None and cached[0] > time.monotonic():
        ca, responder = cached[1], cached[2]
        if responder is None or responder.certificate.not_after > now:
            return ca, responder
    responder = (
        OcspResponder.objects.select_related("ca", "certificate")
        .filter(ca__serial=ca_serial, certificate__revoked=False, certificate__not_before__lte=now,
                certificate__not_after__gt=now)
        .order_by("-certificate__not_after", "-pk")
        .first()
    )
    if responder is not None:
        ca = responder.ca
    else:
        found = CertificateAuthority.objects.filter(serial=ca_serial).first()
        if found is None:
            return None  # not cached: a CA created a moment later is found at once
        ca = found
    if len(_ca_cache) > 1024:
        _ca_cache.clear()
    # Without a responder, look again soon: the worker may be about to make one.
    ttl = _CA_CACHE_SECONDS if responder is not None else 1.0
    _ca_cache[ca_serial] = (time.monotonic() + ttl, ca, responder)
    return ca, responder


@dataclass(frozen=True)
class _Signer:
    key: utils.PrivateKey
    certificate: x509.Certificate
    delegated: bool


def _signer(ca: CertificateAuthority, responder: OcspResponder | None) -> _Signer | None:
    """The delegated responder; else the CA itself if its key is usable here without a password."""
    if responder is not None:
        try:
            return _Signer(responder_key(responder), responder.certificate.pub, True)
        except (ResponderKeyError, ValueError) as ex:
            log.warning("OCSP responder of CA %s is not usable: %s", ca.name, ex)
    try:
        key = ca.key_backend.load_private_key(ca, UsePrivateKeyOptions())
    except PkiError:
        return None
    return _Signer(key, ca.pub, False)


# --- The status of one serial ----------------------------------------------------------------

@dataclass(frozen=True)
class _Status:
    status: ocsp.OCSPCertStatus
    revocation_time: datetime | None = None
    reason: x509.ReasonFlags | None = None


_UNKNOWN = _Status(ocsp.OCSPCertStatus.UNKNOWN)
_STATUS_FIELDS = ("ca_id", "revoked", "revoked_date", "revoked_reason")


def _status(ca: CertificateAuthority, serial_number: int) -> _Status:
    serial = utils.int_to_hex(serial_number)
    # Unique indexes on serial: one lookup whatever the number of certificates.
    row = next(iter(Certificate.objects.filter(serial=serial).order_by().values(*_STATUS_FIELDS)[:1]), None)
    if row is None:  # an intermediate CA this CA signed is answered here too
        row = next(iter(CertificateAuthority.objects.filter(serial=serial).order_by().values(
            "revoked", "revoked_date", "revoked_reason", ca_id=F("parent_id"))[:1]), None)
    if row is None or row["ca_id"] != ca.pk:
        return _UNKNOWN
    if not row["revoked"]:
        return _Status(ocsp.OCSPCertStatus.GOOD)
    reason = x509.ReasonFlags[row["revoked_reason"]] if row["revoked_reason"] else None
    # RFC 5280 §5.3.1: the reason code "unspecified" SHOULD be absent.
    if reason is x509.ReasonFlags.unspecified:
        reason = None
    # A row marked revoked without a date (edited by hand) is revoked as of now.
    revoked_date = (row["revoked_date"] or timezone.now()).replace(microsecond=0)
    return _Status(ocsp.OCSPCertStatus.REVOKED, revoked_date, reason)


# --- The response ----------------------------------------------------------------------------

def respond(ca_serial: str, request_der: bytes, now: datetime | None = None) -> OcspAnswer | None:
    """The OCSP response of the CA with serial ``ca_serial`` to ``request_der``; None if there is no such CA.

    Never raises for a bad request: it gets the ``malformedRequest`` response status.
    """
    now = (now or timezone.now()).replace(microsecond=0)
    found = _find_responder(ca_serial.upper(), now)
    if found is None:
        return None
    ca, responder = found
    try:
        # Untrusted bytes: whatever fails here (bad DER: ValueError; more than one Request:
        # NotImplementedError; an unknown CertID hash: UnsupportedAlgorithm ...) is a malformed request.
        request = ocsp.load_der_ocsp_request(request_der)
        serial_number = request.serial_number
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        algorithm = request.hash_algorithm
        nonce = _nonce(request)
    except Exception as ex:
        log.debug("Malformed OCSP request for CA %s: %s", ca.name, ex)
        return malformed()
    if type(algorithm) not in _CERT_ID_HASHES.values():
        return malformed()

    signer = _signer(ca, responder)
    if signer is None:
        log.warning("CA %s has no OCSP responder and its key is not usable here: answering tryLater.", ca.name)
        return unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)

    if (name_hash, key_hash) == issuer_hashes(ca, algorithm):
        status = _status(ca, serial_number)
    else:  # a certificate of another issuer (RFC 6960 §2.2: unknown)
        status = _UNKNOWN
    lifetime = timedelta(hours=settings.PKI_OCSP_RESPONSE_LIFETIME)
    next_update = min(now + lifetime, signer.certificate.not_valid_after_utc)

    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=serial_number,
        algorithm=algorithm, cert_status=status.status, this_update=now, next_update=next_update,
        revocation_time=status.revocation_time, revocation_reason=status.reason,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
    if signer.delegated:
        builder = builder.certificates([signer.certificate])  # RFC 6960 §4.2.2.2
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)  # RFC 8954
    response = builder.sign(signer.key, utils.signature_hash_for(signer.key))  # type: ignore[arg-type]
    return OcspAnswer(response.public_bytes(serialization.Encoding.DER), now, next_update)


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
