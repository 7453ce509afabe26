"""ACME accounts (RFC 8555 §7.3): creation, lookup, update, deactivation and key rollover."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction

from pki_server.acme import jose, lookups, policy, problems
from pki_server.acme.models import AcmeAccount, AcmeAuthorization, one
from pki_server.acme.urls import AcmeUrls
from pki_server.core.models import CertificateAuthority


def by_kid(ca: CertificateAuthority, kid: str, urls: AcmeUrls) -> AcmeAccount:
    """The account a ``kid`` names; it must exist, belong to this CA's directory and be valid (§6.2, §7.3.6)."""
    slug = urls.account_slug(kid)
    return check(lookups.account_by_slug.one(slug) if slug else None, ca, kid)


def check(account: AcmeAccount | None, ca: CertificateAuthority, kid: str) -> AcmeAccount:
    """``account``, found by ``kid``, if it may sign requests to ``ca``'s directory (by_kid's rules)."""
    if account is None or account.ca_id != ca.pk:
        raise problems.account_does_not_exist(f"No account at {kid}: create one with newAccount first.")
    account.ca = ca  # already loaded: saves a query wherever the account's CA is used
    if account.status != AcmeAccount.STATUS_VALID:
        raise problems.unauthorized(f"The account is {account.status}; it can no longer make requests.")
    return account


def new_account(
    ca: CertificateAuthority, jwk: dict[str, Any], payload: dict[str, Any]
) -> tuple[AcmeAccount, bool]:
    """RFC 8555 §7.3, §7.3.1. Returns the account and whether it was created now."""
    thumbprint = jose.thumbprint(jwk)
    existing = one(AcmeAccount.objects.filter(ca=ca, thumbprint=thumbprint))
    if existing is not None:
        if existing.status != AcmeAccount.STATUS_VALID:
            raise problems.unauthorized(f"The account of this key is {existing.status}.")
        return existing, False
    if payload.get("onlyReturnExisting") is True:
        raise problems.account_does_not_exist("No account exists for this key.")
    agreed = payload.get("termsOfServiceAgreed") is True
    if ca.acme_terms_of_service and not agreed:
        raise problems.malformed(f"You must agree to the terms of service at {ca.acme_terms_of_service}.")
    contacts = policy.parse_contacts(payload.get("contact"), required=ca.acme_requires_contact)
    canonical = jose.canonical_jwk(jwk)
    try:
        with transaction.atomic():
            account = AcmeAccount.objects.create(
                ca=ca, thumbprint=thumbprint, jwk=canonical, contact=contacts, terms_of_service_agreed=agreed,
            )
    except IntegrityError:  # the same key registered concurrently: that one is the account
        return AcmeAccount.objects.get(ca=ca, thumbprint=thumbprint), False
    return account, True


def update(account: AcmeAccount, payload: dict[str, Any]) -> AcmeAccount:
    """RFC 8555 §7.3.2 (contact) and §7.3.6 (deactivation); other fields are ignored."""
    # The account's own status is no change: the acme library (certbot's update_account) sends the
    # whole account object back, "status": "valid" included, to update the contacts.
    if "status" in payload and payload["status"] != account.status:
        if payload["status"] != AcmeAccount.STATUS_DEACTIVATED:
            raise problems.malformed('The only status a client may set is "deactivated".')
        deactivate(account)
        return account
    if "contact" in payload:
        account.contact = policy.parse_contacts(payload["contact"], required=account.ca.acme_requires_contact)
        account.save(update_fields=["contact"])
    return account


def deactivate(account: AcmeAccount) -> None:
    """RFC 8555 §7.3.6: the account can make no more requests, and its pending authorizations end.

    The one way an account is deactivated: by its client (``update``) or by an operator (the dashboard).
    """
    with transaction.atomic():
        AcmeAccount.objects.filter(pk=account.pk).update(status=AcmeAccount.STATUS_DEACTIVATED)
        AcmeAuthorization.objects.filter(account=account, status=AcmeAuthorization.STATUS_PENDING).update(
            status=AcmeAuthorization.STATUS_DEACTIVATED
        )
    account.status = AcmeAccount.STATUS_DEACTIVATED


def change_key(account: AcmeAccount, outer: jose.JWS, urls: AcmeUrls) -> AcmeAccount:
    """RFC 8555 §7.3.5: the payload is a JWS signed by the new key over {account, oldKey}."""
    inner_body = json.dumps(outer.json_payload()).encode("utf-8")
    inner = jose.parse(inner_body, url=outer.url, inner=True)
    new_jwk = inner.jwk
    if new_jwk is None:
        raise problems.malformed("The inner JWS of a key change must carry the new key as jwk.")
    new_key = jose.public_key(new_jwk)
    jose.verify(inner, new_key)
    payload = inner.json_payload()
    if payload.get("account") != urls.account(account.slug):
        raise problems.malformed("The key change's account is not the account that signed the request.")
    old_jwk = payload.get("oldKey")
    if not isinstance(old_jwk, dict) or jose.canonical_jwk(old_jwk) != account.jwk:
        raise problems.malformed("The key change's oldKey is not the account's current key.")
    thumbprint = jose.thumbprint(new_jwk)
    other = one(AcmeAccount.objects.filter(ca=account.ca, thumbprint=thumbprint))
    if other is not None:
        raise problems.conflict("The new key is already the key of an account.", urls.account(other.slug))
    try:
        with transaction.atomic():
            AcmeAccount.objects.filter(pk=account.pk).update(thumbprint=thumbprint, jwk=jose.canonical_jwk(new_jwk))
    except IntegrityError:
        other = AcmeAccount.objects.get(ca=account.ca, thumbprint=thumbprint)
        raise problems.conflict("The new key is already the key of an account.", urls.account(other.slug)) from None
    account.thumbprint, account.jwk = thumbprint, jose.canonical_jwk(new_jwk)
    return account
