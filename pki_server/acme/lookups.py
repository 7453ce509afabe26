"""The lookups every ACME request makes, compiled once (pki_server/prepared.py).

Each is a one-row (or one-order's-rows) SELECT by an indexed key. Keep the builders' filter
arguments in the order their parameters are passed: Prepared checks it on first use.
"""

from __future__ import annotations

from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.prepared import Prepared

account_by_slug: Prepared[AcmeAccount] = Prepared(
    lambda slug: AcmeAccount.objects.filter(slug=slug).order_by()[:1])
order_by_slug: Prepared[AcmeOrder] = Prepared(
    lambda slug: AcmeOrder.objects.filter(slug=slug).order_by()[:1])
order_with_certificate: Prepared[AcmeOrder] = Prepared(
    lambda slug: AcmeOrder.objects.filter(slug=slug).select_related("certificate").order_by()[:1])
authorization_by_slug: Prepared[AcmeAuthorization] = Prepared(
    lambda slug: AcmeAuthorization.objects.filter(slug=slug).order_by()[:1])
#: An authorization's challenges, each with the authorization loaded: the authorization resource
#: in one query (every authorization has at least one challenge).
challenges_of_authorization: Prepared[AcmeChallenge] = Prepared(
    lambda slug: AcmeChallenge.objects.filter(authorization__slug=slug).select_related("authorization").order_by("pk"))
challenge_by_slug: Prepared[AcmeChallenge] = Prepared(
    lambda slug: AcmeChallenge.objects.filter(slug=slug).select_related("authorization").order_by()[:1])

# A resource together with its account, by the account's slug (from the request's kid) and the
# resource's: the account and the resource in one query when the signer owns it (AcmeHandler.owned_lookup).
owned_order: Prepared[AcmeOrder] = Prepared(
    lambda account_slug, slug: AcmeOrder.objects.filter(account__slug=account_slug).filter(slug=slug)
    .select_related("account").order_by()[:1])
owned_order_with_certificate: Prepared[AcmeOrder] = Prepared(
    lambda account_slug, slug: AcmeOrder.objects.filter(account__slug=account_slug).filter(slug=slug)
    .select_related("account", "certificate").order_by()[:1])
owned_challenges_of_authorization: Prepared[AcmeChallenge] = Prepared(
    lambda account_slug, slug: AcmeChallenge.objects.filter(authorization__account__slug=account_slug)
    .filter(authorization__slug=slug).select_related("authorization__account").order_by("pk"))
owned_challenge: Prepared[AcmeChallenge] = Prepared(
    lambda account_slug, slug: AcmeChallenge.objects.filter(authorization__account__slug=account_slug)
    .filter(slug=slug).select_related("authorization__account").order_by()[:1])

authorizations_of_order: Prepared[AcmeAuthorization] = Prepared(
    lambda order_id: AcmeAuthorization.objects.filter(orders=order_id).order_by("pk"))



def _reusable_authorization(wildcard: bool) -> Prepared[AcmeAuthorization]:
    # A boolean compiles to SQL text ("wildcard" or NOT "wildcard"), not a parameter: one lookup for each.
    return Prepared(lambda account_id, identifier_type, identifier, first_status, second_status: (
        AcmeAuthorization.objects.filter(account_id=account_id).filter(identifier_type=identifier_type)
        .filter(identifier=identifier).filter(wildcard=wildcard).filter(status__in=[first_status, second_status])
        .order_by("-status", "-expires")[:1]))


#: A valid or pending authorization to reuse for an identifier (by its wildcard flag), valid ones
#: first, then the one that lasts longest.
reusable_authorization = {True: _reusable_authorization(True), False: _reusable_authorization(False)}

# The worker's side.
challenge_for_validation: Prepared[AcmeChallenge] = Prepared(
    lambda pk: AcmeChallenge.objects.filter(pk=pk).select_related("authorization__account__ca").order_by()[:1])
challenge_with_authorization: Prepared[AcmeChallenge] = Prepared(
    lambda pk: AcmeChallenge.objects.filter(pk=pk).select_related("authorization").order_by()[:1])
orders_of_authorization: Prepared[AcmeOrder] = Prepared(
    lambda authz_id, status: AcmeOrder.objects.filter(authorizations=authz_id).filter(status=status).order_by("pk"))
order_for_issuance: Prepared[AcmeOrder] = Prepared(
    # With the CA's parent: the name constraints of the chain are checked when signing.
    lambda pk: AcmeOrder.objects.filter(pk=pk).select_related("account__ca__parent").order_by()[:1])
