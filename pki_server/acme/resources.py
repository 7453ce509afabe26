"""JSON representations of ACME objects (RFC 8555 §7.1.2-7.1.5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.acme.urls import AcmeUrls


def timestamp(value: datetime) -> str:
    """RFC 3339, as RFC 8555 §7.1 asks."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def account_json(account: AcmeAccount, urls: AcmeUrls) -> dict[str, Any]:
    return {
        "status": account.status,
        "contact": account.contact,
        "termsOfServiceAgreed": account.terms_of_service_agreed,
        "orders": urls.account_orders(account.slug),
        "createdAt": timestamp(account.created),
    }


def challenge_json(challenge: AcmeChallenge, urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": challenge.type,
        "url": urls.challenge(challenge.slug),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated is not None:
        document["validated"] = timestamp(challenge.validated)
    if challenge.error:
        document["error"] = challenge.error
    if challenge.validation_record:
        document["validationRecord"] = challenge.validation_record
    return document


def authorization_json(authz: AcmeAuthorization, challenges: list[AcmeChallenge], urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "identifier": {"type": authz.identifier_type, "value": authz.identifier},
        "status": authz.status,
        "expires": timestamp(authz.expires),
        "challenges": [challenge_json(c, urls) for c in challenges],
    }
    if authz.wildcard:
        document["wildcard"] = True
    return document


def order_json(order: AcmeOrder, authz_slugs: list[str], urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "status": order.status,
        "expires": timestamp(order.expires),
        "identifiers": order.identifiers,
        "authorizations": [urls.authorization(slug) for slug in authz_slugs],
        "finalize": urls.finalize(order.slug),
    }
    if order.not_before:
        document["notBefore"] = timestamp(order.not_before)
    if order.not_after:
        document["notAfter"] = timestamp(order.not_after)
    if order.error:
        document["error"] = order.error
    if order.status == AcmeOrder.STATUS_VALID and order.certificate_id:
        document["certificate"] = urls.certificate(order.slug)
    return document
