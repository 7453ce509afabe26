"""ACME state (RFC 8555 §7.1): accounts, orders, authorizations, challenges, and spent nonces.

The database is the source of truth for every object's status; channel messages only wake the
worker. Identifiers in URLs are random slugs, never row ids.
"""

from __future__ import annotations

import secrets
from typing import TypeVar

from django.db import models
from django.utils import timezone

from pki_server.core.models import Certificate, CertificateAuthority

_M = TypeVar("_M", bound=models.Model)


def new_slug() -> str:
    return secrets.token_urlsafe(16)


def one(queryset: models.QuerySet[_M]) -> _M | None:
    """The row of a lookup by a unique key, or None: ``.first()`` without its needless ORDER BY
    (ordering a wide model's query costs the ORM more than the query costs SQLite)."""
    return next(iter(queryset.order_by()[:1]), None)


class AcmeAccount(models.Model):
    STATUS_VALID, STATUS_DEACTIVATED, STATUS_REVOKED = "valid", "deactivated", "revoked"
    STATUSES = [(s, s) for s in (STATUS_VALID, STATUS_DEACTIVATED, STATUS_REVOKED)]

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="acme_accounts")
    slug = models.CharField(max_length=32, unique=True, default=new_slug, editable=False)
    thumbprint = models.CharField(max_length=64, editable=False, help_text="RFC 7638 thumbprint of the key.")
    jwk = models.TextField(editable=False, help_text="The account's public key (JWK, JSON).")
    contact = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=STATUS_VALID)
    terms_of_service_agreed = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "ACME account"
        constraints = [models.UniqueConstraint(fields=["ca", "thumbprint"], name="pki_acme_account_key")]

    def __str__(self) -> str:
        return self.slug


class AcmeAuthorization(models.Model):
    STATUS_PENDING, STATUS_VALID, STATUS_INVALID = "pending", "valid", "invalid"
    STATUS_DEACTIVATED, STATUS_EXPIRED, STATUS_REVOKED = "deactivated", "expired", "revoked"
    STATUSES = [(s, s) for s in (STATUS_PENDING, STATUS_VALID, STATUS_INVALID, STATUS_DEACTIVATED,
                                 STATUS_EXPIRED, STATUS_REVOKED)]

    account = models.ForeignKey(AcmeAccount, on_delete=models.CASCADE, related_name="authorizations")
    slug = models.CharField(max_length=32, unique=True, default=new_slug, editable=False)
    identifier_type = models.CharField(max_length=8, default="dns")
    identifier = models.CharField(max_length=255, help_text="The name without a wildcard label.")
    wildcard = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=STATUSES, default=STATUS_PENDING)
    expires = models.DateTimeField()
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "ACME authorization"
        indexes = [models.Index(fields=["account", "identifier", "status"], name="pki_acme_authz_reuse")]

    def __str__(self) -> str:
        return f"{'*.' if self.wildcard else ''}{self.identifier}"


class AcmeChallenge(models.Model):
    HTTP_01, DNS_01, TLS_ALPN_01 = "http-01", "dns-01", "tls-alpn-01"
    TYPES = [(t, t) for t in (HTTP_01, DNS_01, TLS_ALPN_01)]
    STATUS_PENDING, STATUS_PROCESSING, STATUS_VALID, STATUS_INVALID = "pending", "processing", "valid", "invalid"
    STATUSES = [(s, s) for s in (STATUS_PENDING, STATUS_PROCESSING, STATUS_VALID, STATUS_INVALID)]

    authorization = models.ForeignKey(AcmeAuthorization, on_delete=models.CASCADE, related_name="challenges")
    slug = models.CharField(max_length=32, unique=True, default=new_slug, editable=False)
    type = models.CharField(max_length=16, choices=TYPES)
    token = models.CharField(max_length=64, default=new_slug, editable=False)
    status = models.CharField(max_length=16, choices=STATUSES, default=STATUS_PENDING)
    validated = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    validation_record = models.JSONField(null=True, blank=True)
    # The account URL the client used when it asked for validation: RFC 8657's CAA accounturi.
    account_uri = models.CharField(max_length=255, blank=True, editable=False)
    # Work bookkeeping: when the validation was dispatched, and until when a worker holds it. The
    # sweeper re-dispatches work whose message was lost or whose worker died (see worker.py).
    processing_since = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ACME challenge"
        # For the sweeper's look for processing challenges (orders.stale_work), which otherwise reads every
        # challenge ever made: 22 ms every 5 s with 300,000 of them, the event loop waiting on SQLite.
        indexes = [models.Index(fields=["status"], name="pki_acme_challenge_status")]

    def __str__(self) -> str:
        return f"{self.type} {self.authorization}"


class AcmeOrder(models.Model):
    STATUS_PENDING, STATUS_READY, STATUS_PROCESSING = "pending", "ready", "processing"
    STATUS_VALID, STATUS_INVALID = "valid", "invalid"
    STATUSES = [(s, s) for s in (STATUS_PENDING, STATUS_READY, STATUS_PROCESSING, STATUS_VALID, STATUS_INVALID)]

    account = models.ForeignKey(AcmeAccount, on_delete=models.CASCADE, related_name="orders")
    slug = models.CharField(max_length=32, unique=True, default=new_slug, editable=False)
    status = models.CharField(max_length=16, choices=STATUSES, default=STATUS_PENDING, db_index=True)
    identifiers = models.JSONField(help_text='[{"type": "dns", "value": "..."}]')
    authorizations = models.ManyToManyField(AcmeAuthorization, related_name="orders")
    expires = models.DateTimeField()
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    csr = models.TextField(blank=True, help_text="The CSR of finalize, kept until issuance.")
    certificate = models.OneToOneField(
        Certificate, on_delete=models.PROTECT, null=True, blank=True, related_name="acme_order"
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    processing_since = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ACME order"
        ordering = ["-created"]
        indexes = [models.Index(fields=["account", "created"], name="pki_acme_order_list")]

    def __str__(self) -> str:
        return self.slug


class AcmeNonce(models.Model):
    """A redeemed nonce (without Redis): the unique constraint makes redemption one atomic insert."""

    nonce = models.CharField(max_length=64, primary_key=True)
    expires = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "spent ACME nonce"

    def __str__(self) -> str:
        return self.nonce
