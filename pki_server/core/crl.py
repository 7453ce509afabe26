"""Certificate revocation lists (RFC 5280 §5): signed where a CA key is usable, stored, served by every process.

A CA's CRL lists every revoked, unexpired certificate it issued and every revoked, unexpired CA it
signed (so the parent's CRL covers its intermediates). Each CRL is stored with its number; web
processes, which may hold no CA key, serve the latest stored one.

A CRL is (re)generated:

- when a CA is created (its first, empty CRL), if its key is usable without a password;
- when a certificate or CA is revoked, in the process that revoked it, if the issuer's key is
  usable there without a password;
- by :func:`refresh_crls` (the worker's sweeper calls it every few seconds): after a revocation
  that no CRL lists yet, and when less than a third of the latest CRL's lifetime remains;
- by ``pki-server dump_crl --regenerate`` (which takes the key's password).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from pki_server.core import signals
from pki_server.core.exceptions import CertificateAuthorityDisabled, KeyBackendError, PkiError
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.managers import check_issuer
from pki_server.core.models import Certificate, CertificateAuthority, CertificateRevocationList, X509CertMixin

log = logging.getLogger(__name__)

#: How often generate_crl() tries again when another process took the CRL number it chose.
NUMBER_ATTEMPTS = 20

#: A revocation is stamped (revoked_date) before it is committed, and other hosts' clocks differ a
#: little. So refresh_crls() also checks revocations stamped up to this long *before* the latest
#: CRL's thisUpdate, by serial, against that CRL: one committed late is not missed.
COMMIT_MARGIN = timedelta(minutes=2)

#: "revoked = true" as a filter that the index on (ca, revoked) serves, so that the cost of a query
#: grows with the revoked certificates only. Django writes ``revoked=True`` as a bare ``WHERE
#: revoked``, which SQLite does not match against the index's second column.
REVOKED: dict[str, Any] = {"revoked__in": [True]}

# Per CA, the latest CRL's primary key and the recent serials refresh_crls() found listed in it:
# a CRL is parsed at most once per process for the same set of recent revocations.
_confirmed: dict[int, tuple[int, frozenset[str]]] = {}


def latest_crl(ca: CertificateAuthority) -> CertificateRevocationList | None:
    """The CA's CRL with the highest number, or None if it has none yet."""
    return CertificateRevocationList.objects.filter(ca=ca).order_by("-number").first()


def _entry(item: X509CertMixin) -> x509.RevokedCertificate:
    """One revokedCertificates entry (RFC 5280 §5.3): reason and invalidity date as extensions."""
    assert item.revoked_date is not None
    builder = x509.RevokedCertificateBuilder().serial_number(int(item.serial, 16)).revocation_date(item.revoked_date)
    reason = x509.ReasonFlags[item.revoked_reason] if item.revoked_reason else x509.ReasonFlags.unspecified
    if reason is not x509.ReasonFlags.unspecified:  # §5.3.1: absent rather than unspecified
        builder = builder.add_extension(x509.CRLReason(reason), critical=False)
    if item.compromised is not None:  # §5.3.2
        builder = builder.add_extension(x509.InvalidityDate(item.compromised), critical=False)
    return builder.build()


def _revoked_entries(ca: CertificateAuthority, now: datetime) -> list[x509.RevokedCertificate]:
    fields = ("serial", "revoked_date", "revoked_reason", "compromised")
    certificates = Certificate.objects.filter(ca=ca, **REVOKED, not_after__gt=now).only(*fields).order_by()
    children = CertificateAuthority.objects.filter(parent=ca, **REVOKED, not_after__gt=now).only(*fields).order_by()
    return [_entry(item) for item in [*certificates, *children]]


def _next_number(ca: CertificateAuthority) -> int:
    current = CertificateRevocationList.objects.filter(ca=ca).aggregate(number=models.Max("number"))["number"]
    return (current or 0) + 1


def generate_crl(
    ca: CertificateAuthority, key_backend_options: UsePrivateKeyOptions | dict[str, Any] | None = None
) -> CertificateRevocationList:
    """Sign and store a new CRL of ``ca``, numbered one above the latest, and return it.

    Raises :class:`CertificateAuthorityDisabled` for a disabled, revoked or expired CA, and
    :class:`PasswordError` / :class:`KeyBackendError` when the key cannot be used with
    ``key_backend_options``.

    Processes that generate at once never store two CRLs with one number: the one that loses
    the insert returns the winner's CRL if it was made from data read after the call began
    (it lists what this call would list), and otherwise builds again with the next number.
    """
    backend = ca.key_backend
    options = backend.get_use_private_key_options(key_backend_options)
    check_issuer(ca, timezone.now())  # a CA that signs nothing signs no CRL either
    backend.check_usable(ca, options)  # a missing or wrong password fails before any query
    issuer_ski = ca.pub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    lifetime: timedelta = settings.PKI_CRL_LIFETIME
    started = timezone.now()
    for attempt in range(NUMBER_ATTEMPTS):
        # The number first, then the entries: if another process inserts between the two, one of
        # the two inserts fails on (ca, number) and builds again from fresh data, so the CRL with
        # the highest number never lacks a revocation that a lower one lists.
        number = _next_number(ca)
        read_at = timezone.now()  # stored as ``created``: the entries below are read after it
        this_update = read_at.replace(microsecond=0)  # what the DER holds (§5.1.2.4)
        next_update = this_update + lifetime
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.pub.subject)
            .last_update(this_update)
            .next_update(next_update)
            .add_extension(aki, critical=False)  # §5.2.1
            .add_extension(x509.CRLNumber(number), critical=False)  # §5.2.3
        )
        for entry in _revoked_entries(ca, this_update):
            builder = builder.add_revoked_certificate(entry)
        signed = backend.sign_certificate_revocation_list(ca, options, builder)
        crl = CertificateRevocationList(
            ca=ca, number=number, this_update=this_update, next_update=next_update,
            der=signed.public_bytes(Encoding.DER), created=read_at,
        )
        try:
            with transaction.atomic():
                crl.save(force_insert=True)
        except IntegrityError:
            winner = latest_crl(ca)
            if winner is not None and winner.created > started:
                log.debug("CRL #%d of CA %s was signed meanwhile from fresh data; using it.", winner.number, ca.name)
                return winner
            log.debug("CRL number %d of CA %s was taken meanwhile; trying again.", number, ca.name)
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311 - jitter, not a secret
            continue
        log.info("Signed CRL #%d of CA %s (%d entries).", number, ca.name, len(signed))
        return crl
    raise PkiError(f"Could not store a CRL of CA {ca.name!r}: its number was taken {NUMBER_ATTEMPTS} times.")


# --- Keeping CRLs current ------------------------------------------------------------------------

def _unlisted_revocation(ca: CertificateAuthority, crl: CertificateRevocationList) -> bool:
    """Whether a certificate or child CA was revoked that ``crl`` may not list (one indexed query)."""
    since = crl.this_update - COMMIT_MARGIN
    # Expired ones are left off the CRL on purpose (RFC 5280 §3.3), so they are not asked about.
    listed = {**REVOKED, "revoked_date__gt": since, "not_after__gt": crl.this_update}
    recent = (
        Certificate.objects.filter(ca=ca, **listed).values_list("serial").order_by()
        .union(CertificateAuthority.objects.filter(parent=ca, **listed).values_list("serial").order_by())
    )
    serials = frozenset(serial for (serial,) in recent)
    if not serials:
        return False
    confirmed_crl, confirmed = _confirmed.get(ca.pk, (None, frozenset()))
    if confirmed_crl == crl.pk and serials <= confirmed:
        return False
    parsed = x509.load_der_x509_crl(bytes(crl.der))
    if any(parsed.get_revoked_certificate_by_serial_number(int(serial, 16)) is None for serial in serials):
        return True
    _confirmed[ca.pk] = (crl.pk, serials)
    return False


def needs_refresh(ca: CertificateAuthority, crl: CertificateRevocationList | None, now: datetime) -> bool:
    """No CRL yet, a revocation it may not list, or less than a third of its lifetime left."""
    if crl is None:
        return True
    if now >= crl.next_update - (crl.next_update - crl.this_update) / 3:
        return True
    return _unlisted_revocation(ca, crl)


def refresh_crls() -> int:
    """Regenerate the CRLs that need it, for every CA whose key is usable here without a password.

    Meant to run periodically (the worker's sweeper calls it). Returns how many CRLs it signed.
    A CA whose key needs a password is skipped: its CRL is made by ``pki-server dump_crl
    --regenerate --password-file …``.
    """
    now = timezone.now()
    signed = 0
    for ca in CertificateAuthority.objects.filter(enabled=True, revoked=False, not_after__gt=now).order_by("pk"):
        if not needs_refresh(ca, latest_crl(ca), now):
            continue
        try:
            generate_crl(ca)
        except KeyBackendError as ex:  # PasswordError included: not usable in this process
            log.debug("Not refreshing the CRL of CA %s here: %s", ca.name, ex)
            continue
        except Exception:  # one CA's failure must not keep the others' CRLs from being renewed
            log.exception("Could not refresh the CRL of CA %s; trying again at the next run.", ca.name)
            continue
        signed += 1
    return signed


# --- Signal receivers ----------------------------------------------------------------------------

def _regenerate_quietly(ca: CertificateAuthority, why: str) -> None:
    try:
        generate_crl(ca)
    except KeyBackendError as ex:
        # A web process without CA keys, or a key with a password: refresh_crls() in a worker, or
        # `dump_crl --regenerate --password-file`, signs it (docs/revocation.md).
        log.debug("CRL of CA %s not regenerated %s: %s", ca.name, why, ex)
    except CertificateAuthorityDisabled as ex:
        log.warning("CRL of CA %s not regenerated %s: %s", ca.name, why, ex)
    except Exception:
        # What triggered this is done and saved; a failure here must not turn it into an error.
        log.exception("CRL of CA %s not regenerated %s; refresh_crls() will try again.", ca.name, why)


def on_ca_created(sender: Any, ca: CertificateAuthority, **kwargs: Any) -> None:
    """The first CRL of a new CA (an empty one)."""
    _regenerate_quietly(ca, "on creation")


def on_revoked(sender: Any, cert: X509CertMixin, **kwargs: Any) -> None:
    """A new CRL of the issuer of what was revoked: a Certificate's CA, or a CA's parent."""
    issuer = cert.ca if isinstance(cert, Certificate) else getattr(cert, "parent", None)
    if issuer is not None:
        _regenerate_quietly(issuer, f"after revoking {cert.serial}")


def connect_receivers() -> None:
    signals.post_create_ca.connect(on_ca_created, dispatch_uid="pki_crl_on_ca_created")
    signals.post_revoke_cert.connect(on_revoked, dispatch_uid="pki_crl_on_revoked")
