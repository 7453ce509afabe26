"""Certificate authorities and the certificates they issue.

Both keep the certificate itself (DER) and the fields needed to find it (serial, common name,
names, validity, status). The private key of a CA is never in these rows' visible fields: a key
backend holds it, and ``key_backend_options`` only says where (see key_backends/).
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from pki_server.core import extensions as ext
from pki_server.core import signals, utils
from pki_server.core.exceptions import AlreadyRevoked
from pki_server.core.key_backends import KeyBackend, key_backends
from pki_server.core.managers import CertificateAuthorityManager, CertificateManager

REVOCATION_REASONS = [
    (reason.name, reason.name)
    for reason in x509.ReasonFlags
    if reason is not x509.ReasonFlags.remove_from_crl
]


def parse_reason(reason: x509.ReasonFlags | str | None) -> x509.ReasonFlags:
    """A revocation reason from a :class:`x509.ReasonFlags` or its name (``key_compromise``)."""
    if reason is None:
        return x509.ReasonFlags.unspecified
    if isinstance(reason, x509.ReasonFlags):
        parsed = reason
    else:
        # key_compromise, KEY-COMPROMISE and RFC 5280's keyCompromise all name the same reason.
        wanted = str(reason).strip().lower().replace("-", "").replace("_", "")
        found = [flag for flag in x509.ReasonFlags if flag.name.replace("_", "") == wanted]
        if not found:
            names = ", ".join(name for name, _ in REVOCATION_REASONS)
            raise ValueError(f"{reason!r} is not a revocation reason; use one of {names}.")
        parsed = found[0]
    if parsed is x509.ReasonFlags.remove_from_crl:
        raise ValueError("remove_from_crl is only for delta CRLs and cannot be a revocation reason.")
    return parsed


class X509CertMixin(models.Model):
    """What a CA and an end-entity certificate have in common: the certificate and its status."""

    created = models.DateTimeField(default=timezone.now, editable=False)
    serial = models.CharField(max_length=64, unique=True, editable=False,
                              help_text="Serial number, upper-case hex without colons.")
    der = models.BinaryField(editable=False)
    cn = models.CharField("Common name", max_length=255, blank=True, db_index=True, editable=False)
    subject = models.TextField(blank=True, editable=False)
    not_before = models.DateTimeField(editable=False)
    not_after = models.DateTimeField(db_index=True, editable=False)
    revoked = models.BooleanField(default=False, db_index=True)
    revoked_date = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True, choices=REVOCATION_REASONS)
    compromised = models.DateTimeField(
        null=True, blank=True, help_text="When the key is known or suspected to have been compromised."
    )

    class Meta:
        abstract = True

    def _set_certificate(self, certificate: x509.Certificate) -> None:
        self.der = certificate.public_bytes(serialization.Encoding.DER)
        self.serial = utils.int_to_hex(certificate.serial_number)
        self.subject = utils.format_name(certificate.subject)
        self.cn = utils.common_name(certificate.subject)[:255]
        self.not_before = certificate.not_valid_before_utc
        self.not_after = certificate.not_valid_after_utc
        self.__dict__["pub"] = certificate

    @cached_property
    def pub(self) -> x509.Certificate:
        """The certificate as a :class:`cryptography.x509.Certificate`."""
        return x509.load_der_x509_certificate(bytes(self.der))

    @property
    def pem(self) -> str:
        return self.pub.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def sha256_fingerprint(self) -> str:
        return self.pub.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def is_expired(self) -> bool:
        return self.not_after <= timezone.now()

    @property
    def status(self) -> str:
        if self.revoked:
            return "revoked"
        if self.is_expired:
            return "expired"
        if self.not_before > timezone.now():
            return "not yet valid"
        return "valid"

    def revoke(
        self, reason: x509.ReasonFlags | str | None = x509.ReasonFlags.unspecified,
        compromised: datetime | None = None,
    ) -> None:
        """Revoke and save. Raises :class:`AlreadyRevoked` if it is revoked already."""
        parsed = parse_reason(reason)
        if compromised is not None and timezone.is_naive(compromised):
            raise ValueError("compromised must be a timezone-aware datetime.")
        if self.revoked:
            raise AlreadyRevoked(f"{self} is revoked already (on {self.revoked_date:%Y-%m-%d %H:%M} UTC).")
        signals.pre_revoke_cert.send(sender=type(self), cert=self, reason=parsed, compromised=compromised)
        now = timezone.now()
        with transaction.atomic():
            # One conditional UPDATE, so two concurrent revocations cannot both succeed.
            updated = type(self)._default_manager.filter(pk=self.pk, revoked=False).update(
                revoked=True, revoked_date=now, revoked_reason=parsed.name, compromised=compromised
            )
        if not updated:
            raise AlreadyRevoked(f"{self} is revoked already.")
        self.revoked, self.revoked_date, self.revoked_reason, self.compromised = True, now, parsed.name, compromised
        signals.post_revoke_cert.send(sender=type(self), cert=self)


@lru_cache(maxsize=64)
def _parsed_ca_certificate(der: bytes) -> x509.Certificate:
    # Certificates are immutable, and cryptography keeps their extensions once parsed.
    return x509.load_der_x509_certificate(der)


class CertificateAuthority(X509CertMixin):
    name = models.CharField(max_length=64, unique=True, help_text="A short, unique name for this CA.")
    enabled = models.BooleanField(default=True, help_text="A disabled CA signs nothing.")
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children"
    )
    path_length = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    key_backend_alias = models.CharField(max_length=64, editable=False)
    key_backend_options = models.JSONField(default=dict, editable=False)

    acme_enabled = models.BooleanField("ACME enabled", default=False)
    acme_requires_contact = models.BooleanField(
        "ACME requires contact", default=False, help_text="New ACME accounts must give a mailto: contact."
    )
    acme_profile = models.CharField("ACME profile", max_length=32, default="webserver")
    acme_terms_of_service = models.URLField("ACME terms of service", blank=True)
    acme_website = models.URLField("ACME website", blank=True)
    acme_caa_identities = models.CharField(
        "CAA identities", max_length=255, blank=True,
        help_text="Comma-separated domain names that CAA records use for this CA.",
    )

    objects = CertificateAuthorityManager()

    class Meta:
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @cached_property
    def pub(self) -> x509.Certificate:
        """The certificate, parsed once per process: every issuance reads the CA's row afresh."""
        return _parsed_ca_certificate(bytes(self.der))

    @property
    def key_backend(self) -> KeyBackend:
        return key_backends[self.key_backend_alias]

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    @property
    def issuer_url(self) -> str:
        return ext.issuer_url(self)

    @property
    def ocsp_url(self) -> str:
        return ext.ocsp_url(self)

    @property
    def crl_url(self) -> str:
        return ext.crl_url(self)

    @property
    def caa_identities(self) -> list[str]:
        """Domain names that CAA records use for this CA: the configured ones, else the host of PKI_BASE_URL."""
        configured = [name.strip().lower() for name in self.acme_caa_identities.split(",") if name.strip()]
        return configured or [urlsplit(settings.PKI_BASE_URL).hostname or "localhost"]

    @property
    def key_type(self) -> str:
        return utils.describe_key(self.pub.public_key())

    def bundle(self) -> list[CertificateAuthority]:
        """This CA and the CAs above it, this one first."""
        chain: list[CertificateAuthority] = []
        current: CertificateAuthority | None = self
        while current is not None:
            chain.append(current)
            current = current.parent
        return chain

    def check_usable(self, options: Any = None) -> None:
        """Raise unless the private key can be used with ``options`` (its password, for example)."""
        backend = self.key_backend
        backend.check_usable(self, backend.get_use_private_key_options(options))


class Certificate(X509CertMixin):
    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="certificates")
    profile = models.CharField(max_length=32, blank=True, editable=False)
    sans = models.TextField("Subject alternative names", blank=True, editable=False)
    csr = models.TextField("CSR", blank=True, editable=False)

    objects = CertificateManager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["ca", "revoked"], name="pki_cert_ca_revoked"),
            # "is there a revocation newer than the CA's latest CRL?" (crl.refresh_crls)
            models.Index(fields=["ca", "revoked_date"], name="pki_cert_ca_revoked_date"),
        ]

    def __str__(self) -> str:
        return self.cn or self.sans.split(",", 1)[0].partition(":")[2] or self.serial

    def _set_certificate(self, certificate: x509.Certificate) -> None:
        super()._set_certificate(certificate)
        self.sans = ",".join(ext.format_general_name(name) for name in ext.subject_alternative_names(certificate))

    def bundle(self) -> list[x509.Certificate]:
        """The certificate followed by the chain of CAs up to, not including, the root."""
        chain = [self.pub] + [ca.pub for ca in self.ca.bundle()]
        return chain[:-1] if len(chain) > 1 else chain

    @property
    def bundle_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.bundle())


class CertificateRevocationList(models.Model):
    """A CRL as signed (RFC 5280 §5), kept so that every process serves the same bytes without the CA key."""

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="crls")
    number = models.PositiveBigIntegerField(help_text="The CRL number (RFC 5280 §5.2.3), increasing per CA.")
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    der = models.BinaryField(editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "certificate revocation list"
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["ca", "number"], name="pki_crl_ca_number")]

    def __str__(self) -> str:
        return f"{self.ca} CRL #{self.number}"


class OcspResponder(models.Model):
    """A delegated OCSP responder of a CA (RFC 6960 §4.2.2.2): its certificate, and its key.

    The key is stored encrypted with a key derived from the installation's secret key, so that web
    processes, which hold no CA key, can sign OCSP responses. It is never shown anywhere.
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="ocsp_responders")
    certificate = models.OneToOneField(Certificate, on_delete=models.PROTECT, related_name="ocsp_responder")
    private_key = models.TextField(editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "OCSP responder"
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"OCSP responder of {self.ca} ({self.certificate.serial})"
