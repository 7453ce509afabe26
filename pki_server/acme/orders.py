"""The ACME order state machine (RFC 8555 §7.1.6), without HTTP.

Every function runs synchronously inside one database hop of a request or of the worker. Status
changes that can race (finalize, starting and finishing a validation, issuance) are single
conditional UPDATEs, so two processes can never both win.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pki_server.acme import jose, lookups, policy, problems, signals
from pki_server.acme.challenges import VALIDATORS
from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.acme.policy import Identifier
from pki_server.core.exceptions import PkiError, SigningPolicyError
from pki_server.core.extensions import check_name_constraints
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.core.profiles import get_profile
from pki_server.prepared import conditional_update, insert

log = logging.getLogger(__name__)

ORDER_LIFETIME = timedelta(days=7)
PENDING_AUTHZ_LIFETIME = timedelta(days=7)
VALID_AUTHZ_LIFETIME = timedelta(days=30)

Authz = AcmeAuthorization
Chall = AcmeChallenge


def challenge_types(identifier: Identifier) -> list[str]:
    """The challenges offered for an identifier, of the types this server can validate."""
    if identifier.type == "ip":
        wanted = [Chall.HTTP_01, Chall.TLS_ALPN_01]  # RFC 8738 §7: no dns-01 for IP addresses
    elif identifier.wildcard:
        wanted = [Chall.DNS_01]  # RFC 8555 §7.1.3: wildcards only through DNS
    else:
        wanted = [Chall.HTTP_01, Chall.DNS_01, Chall.TLS_ALPN_01]
    return [kind for kind in wanted if kind in VALIDATORS]


def _parse_time(payload: dict[str, Any], field: str) -> datetime | None:
    value = payload.get(field)
    if value is None:
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or timezone.is_naive(parsed):
        raise problems.malformed(f"{field} must be an RFC 3339 date-time with a time zone.")
    return parsed


def _as_general_name(identifier: Identifier) -> x509.GeneralName:
    if identifier.type == "ip":
        return x509.IPAddress(ipaddress.ip_address(identifier.value))
    return x509.DNSName(identifier.value)


def new_order(account: AcmeAccount, payload: dict[str, Any]) -> tuple[AcmeOrder, list[AcmeAuthorization]]:
    ca: CertificateAuthority = account.ca
    identifiers = policy.parse_identifiers(payload.get("identifiers"))
    for identifier in identifiers:
        if not challenge_types(identifier):
            raise problems.rejected_identifier(
                f"{identifier.value!r} cannot be validated by this server: no challenge type it supports applies."
            )
    try:
        check_name_constraints(ca, [_as_general_name(i) for i in identifiers])
    except SigningPolicyError as ex:
        raise problems.rejected_identifier(str(ex)) from None

    now = timezone.now()
    not_before, not_after = _parse_time(payload, "notBefore"), _parse_time(payload, "notAfter")
    if not_before is not None and not_before < now - timedelta(days=1):
        raise problems.malformed("notBefore may not be more than a day in the past.")
    lifetime = get_profile(ca.acme_profile).default_expires
    start = not_before or now
    if not_after is not None:
        if not_after <= start:
            raise problems.malformed("notAfter must be later than notBefore and than now.")
        if not_after - start > lifetime:
            raise problems.malformed(f"This CA issues certificates for at most {lifetime.days} days.")
        if not_after > ca.not_after:
            raise problems.malformed(f"notAfter is past the CA's own expiry ({ca.not_after:%Y-%m-%d}).")
    if not_before is not None and not_before >= ca.not_after:
        raise problems.malformed("notBefore is past the CA's own expiry.")
    # §7.4: no certificate with other contents than requested; the core would move it to the CA's start.
    if not_before is not None and not_before < ca.not_before:
        raise problems.malformed(f"notBefore is before the CA's own validity ({ca.not_before:%Y-%m-%d %H:%M:%S} UTC).")

    with transaction.atomic():
        authorizations = [_authorization_for(account, identifier, now) for identifier in identifiers]
        status = AcmeOrder.STATUS_READY if all(a.status == Authz.STATUS_VALID for a in authorizations) \
            else AcmeOrder.STATUS_PENDING
        expires = min([now + ORDER_LIFETIME, *(a.expires for a in authorizations)])
        order = AcmeOrder(account=account, status=status, identifiers=[i.to_json() for i in identifiers],
                          expires=expires, not_before=not_before, not_after=not_after)
        insert([order])
        insert([AcmeOrder.authorizations.through(acmeorder=order, acmeauthorization=authz)
                for authz in authorizations])
        signals.order_created.send(sender=AcmeOrder, order=order)
    return order, sorted(authorizations, key=lambda authz: authz.pk)


def _authorization_for(account: AcmeAccount, identifier: Identifier, now: datetime) -> AcmeAuthorization:
    """A valid (or still pending) authorization of this account for the identifier, or a new one."""
    # "valid" sorts after "pending": valid first, then the one that lasts longest. One that ends
    # within the hour is not reused (nor, then, are others: a new one is made, as for a first order).
    reusable = lookups.reusable_authorization[identifier.wildcard].one(
        account.pk, identifier.type, identifier.base, Authz.STATUS_VALID, Authz.STATUS_PENDING)
    if reusable is not None and reusable.expires > now + timedelta(hours=1):
        return reusable
    authz = Authz(account=account, identifier_type=identifier.type, identifier=identifier.base,
                  wildcard=identifier.wildcard, expires=now + PENDING_AUTHZ_LIFETIME)
    insert([authz])
    insert([Chall(authorization=authz, type=kind) for kind in challenge_types(identifier)])
    return authz


# --- Reading, with expiry applied ----------------------------------------------------------------

def refresh_authorization(authz: AcmeAuthorization, now: datetime | None = None) -> AcmeAuthorization:
    now = now or timezone.now()
    if authz.status in (Authz.STATUS_PENDING, Authz.STATUS_VALID) and authz.expires <= now:
        conditional_update(Authz, authz.pk, {"status": Authz.STATUS_EXPIRED}, status=authz.status)
        authz.status = Authz.STATUS_EXPIRED
    return authz


def refresh_order(order: AcmeOrder) -> list[AcmeAuthorization] | None:
    """Apply RFC 8555 §7.1.6 to a pending or ready order: expiry and its authorizations' states.

    Returns the authorizations it loaded (ordered by id), or None when the order's state is final.
    """
    if order.status not in (AcmeOrder.STATUS_PENDING, AcmeOrder.STATUS_READY):
        return None  # processing, valid and invalid orders do not expire into another state
    now = timezone.now()
    authzs = lookups.authorizations_of_order.all(order.pk)
    for authz in authzs:
        refresh_authorization(authz, now)
    if order.expires <= now:
        new_status, error = AcmeOrder.STATUS_INVALID, problems.problem_json("malformed", "The order expired.")
    elif any(a.status != Authz.STATUS_VALID and a.status != Authz.STATUS_PENDING for a in authzs):
        bad = next(a for a in authzs if a.status not in (Authz.STATUS_VALID, Authz.STATUS_PENDING))
        new_status = AcmeOrder.STATUS_INVALID
        error = problems.problem_json(
            "unauthorized", f"The authorization for {bad} is {bad.status}, so the order cannot be completed."
        )
    elif all(a.status == Authz.STATUS_VALID for a in authzs):
        new_status, error = AcmeOrder.STATUS_READY, None
    else:
        new_status, error = AcmeOrder.STATUS_PENDING, None
    if new_status != order.status:
        conditional_update(AcmeOrder, order.pk, {"status": new_status, "error": error}, status=order.status)
        order.status, order.error = new_status, error
    return authzs


# --- Challenges and validation ----------------------------------------------------------------------

def start_challenge(challenge: AcmeChallenge, account_uri: str = "", lease: timedelta | None = None) -> bool:
    """A client's ``{}`` to a challenge (RFC 8555 §7.5.1). True when a validation must be dispatched.

    ``account_uri`` is the account URL the request was signed with, for CAA's accounturi (RFC 8657).
    With ``lease``, the challenge is also claimed for that long (as ``claim`` does), for a validation
    the caller starts itself.
    """
    authz = refresh_authorization(challenge.authorization)
    if challenge.status != Chall.STATUS_PENDING:
        return False  # processing already, or done: answer with its state
    if authz.status != Authz.STATUS_PENDING:
        raise problems.malformed(f"The authorization is {authz.status}; its challenges can no longer be attempted.")
    now = timezone.now()
    values: dict[str, Any] = {"status": Chall.STATUS_PROCESSING, "processing_since": now, "account_uri": account_uri}
    if lease is not None:
        values["lease_until"] = now + lease
    updated = conditional_update(Chall, challenge.pk, values, status=Chall.STATUS_PENDING)
    if updated:
        challenge.status, challenge.processing_since = Chall.STATUS_PROCESSING, now
    return bool(updated)


def finish_validation(
    challenge_id: int, valid: bool, record: list[dict[str, Any]] | None, error: dict[str, Any] | None
) -> bool:
    """Store a validation's outcome and move the authorization and its orders on. False if it came late."""
    now = timezone.now()
    with transaction.atomic():
        updated = conditional_update(Chall, challenge_id, {
            "status": Chall.STATUS_VALID if valid else Chall.STATUS_INVALID, "validated": now if valid else None,
            "validation_record": record, "error": error, "processing_since": None, "lease_until": None,
        }, status=Chall.STATUS_PROCESSING)
        if not updated:
            return False
        challenge = lookups.challenge_with_authorization.one(challenge_id)
        assert challenge is not None  # the UPDATE above found it, in this transaction
        authz = challenge.authorization
        if valid:
            conditional_update(Authz, authz.pk, {"status": Authz.STATUS_VALID, "expires": now + VALID_AUTHZ_LIFETIME},
                               status=Authz.STATUS_PENDING)
        else:
            conditional_update(Authz, authz.pk, {"status": Authz.STATUS_INVALID}, status=Authz.STATUS_PENDING)
        for order in lookups.orders_of_authorization.all(authz.pk, AcmeOrder.STATUS_PENDING):
            refresh_order(order)
            if error is not None and order.status == AcmeOrder.STATUS_INVALID:
                # RFC 8555 §7.1.3: the order's error says what failed (a "caa" refusal, say), not just that it did.
                AcmeOrder.objects.filter(pk=order.pk).update(error={
                    **error, "detail": f"The validation of {authz} failed: {error.get('detail', '')}"})
        signals.challenge_finished.send(sender=Chall, challenge_id=challenge_id, valid=valid, error=error)
    return True


def deactivate_authorization(authz: AcmeAuthorization) -> AcmeAuthorization:
    """RFC 8555 §7.5.2: a pending or valid authorization can be deactivated."""
    updated = Authz.objects.filter(
        pk=authz.pk, status__in=[Authz.STATUS_PENDING, Authz.STATUS_VALID]
    ).update(status=Authz.STATUS_DEACTIVATED)
    if not updated:
        raise problems.malformed(f"The authorization is {authz.status}; only pending or valid ones can be deactivated.")
    authz.status = Authz.STATUS_DEACTIVATED
    for order in AcmeOrder.objects.filter(authorizations=authz, status__in=[AcmeOrder.STATUS_PENDING,
                                                                             AcmeOrder.STATUS_READY]):
        refresh_order(order)
    return authz


# --- Finalize and issuance ------------------------------------------------------------------------

def finalize(order: AcmeOrder, payload: dict[str, Any], *, issue_now: bool = False
             ) -> tuple[AcmeOrder, list[AcmeAuthorization] | None]:
    """RFC 8555 §7.4: check the CSR and move a ready order to processing.

    With ``issue_now`` (this process runs a worker, so it can sign) the certificate is issued at
    once and the order returned valid (or invalid), sparing the client its polling; otherwise the
    order stays processing and the caller dispatches issuance to a worker.
    """
    authorizations = refresh_order(order)
    if order.status != AcmeOrder.STATUS_READY:
        raise problems.order_not_ready(
            f"The order is {order.status}; it can be finalized only when it is ready"
            + (" (all its authorizations valid)." if order.status == AcmeOrder.STATUS_PENDING else ".")
        )
    csr = policy.load_csr(jose.b64decode(payload.get("csr"), "csr"))
    identifiers = [Identifier(i["type"], i["value"]) for i in order.identifiers]
    policy.check_csr(csr, identifiers, _account_jwk(order.account))
    now = timezone.now()
    values: dict[str, Any] = {"status": AcmeOrder.STATUS_PROCESSING, "processing_since": now,
                              "csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii")}
    if issue_now:  # claimed for issuance here in the same write (as claim() would), one commit fewer
        values["lease_until"] = now + ISSUE_LEASE
    if not conditional_update(AcmeOrder, order.pk, values, status=AcmeOrder.STATUS_READY):
        order.refresh_from_db()  # another finalize won the race
        raise problems.order_not_ready(f"The order is {order.status}; it is being finalized already.")
    order.status, order.processing_since = AcmeOrder.STATUS_PROCESSING, now
    if issue_now:
        issued = issue(order.pk)
        if issued is not None:
            issued.account = order.account
            order = issued
    return order, authorizations


def _account_jwk(account: AcmeAccount) -> dict[str, Any]:
    return json.loads(account.jwk)


#: How long a worker holds an order it signs: signing takes milliseconds; a dead worker holds it this long.
ISSUE_LEASE = timedelta(seconds=15)


def claim(model: type[AcmeOrder] | type[AcmeChallenge], pk: int, lease: timedelta) -> bool:
    """Take a processing order or challenge for work. Only one worker holds it until the lease ends;
    a worker that dies loses it then, and the sweeper hands it to another."""
    now = timezone.now()
    processing = AcmeOrder.STATUS_PROCESSING if model is AcmeOrder else Chall.STATUS_PROCESSING
    return bool(conditional_update(model, pk, {"lease_until": now + lease}, status=processing,
                                   condition="lease_until IS NULL OR lease_until < %s", condition_params=(now,)))


def release(model: type[AcmeOrder] | type[AcmeChallenge], pk: int) -> None:
    """Give back a claimed row (its worker is stopping): the sweeper re-dispatches it at its next round."""
    processing = AcmeOrder.STATUS_PROCESSING if model is AcmeOrder else Chall.STATUS_PROCESSING
    model.objects.filter(pk=pk, status=processing).update(lease_until=timezone.now() - timedelta(seconds=1))


def stale_work(model: type[AcmeOrder] | type[AcmeChallenge], grace: timedelta) -> list[int]:
    """Processing rows whose wake-up was lost (never claimed within ``grace``) or whose lease ran out."""
    now = timezone.now()
    processing = AcmeOrder.STATUS_PROCESSING if model is AcmeOrder else Chall.STATUS_PROCESSING
    return list(
        model.objects.filter(status=processing)
        .filter(Q(lease_until__isnull=True, processing_since__lt=now - grace) | Q(lease_until__lt=now))
        .values_list("pk", flat=True)[:100]
    )


def issue(order_id: int) -> AcmeOrder | None:
    """Sign the certificate of a processing order, once; a failure marks the order invalid."""
    order = lookups.order_for_issuance.one(order_id)
    if order is None or order.status != AcmeOrder.STATUS_PROCESSING:
        return order
    ca = order.account.ca
    csr = x509.load_pem_x509_csr(order.csr.encode("ascii"))
    names = [_as_general_name(Identifier(i["type"], i["value"])) for i in order.identifiers]
    san = x509.SubjectAlternativeName(names)
    subject = csr.subject if len(csr.subject) else None
    try:
        with transaction.atomic():
            # A write that changes nothing but locks the row until commit (as SELECT FOR UPDATE would),
            # so that a worker whose lease ran out while it signed cannot have a second one sign too.
            if not conditional_update(AcmeOrder, order.pk, {"status": AcmeOrder.STATUS_PROCESSING},
                                      status=AcmeOrder.STATUS_PROCESSING):
                return order
            cert = Certificate.objects.create_cert(
                ca, None, csr, subject=subject if subject is not None else x509.Name([]),
                profile=ca.acme_profile, not_before=order.not_before, not_after=order.not_after,
                extensions=[san],
            )
            conditional_update(AcmeOrder, order.pk, {
                "status": AcmeOrder.STATUS_VALID, "certificate": cert.pk, "processing_since": None,
                "lease_until": None})
        order.status, order.certificate, order.processing_since, order.lease_until = \
            AcmeOrder.STATUS_VALID, cert, None, None
    except (PkiError, ValueError) as ex:
        log.warning("Order %s: issuance failed: %s", order.slug, ex)
        _fail(order, problems.problem_json("badCSR" if isinstance(ex, SigningPolicyError) else "serverInternal",
                                           f"The certificate could not be issued: {ex}",
                                           400 if isinstance(ex, SigningPolicyError) else 500))
    except Exception:
        log.exception("Order %s: issuance failed", order.slug)
        _fail(order, problems.problem_json("serverInternal", "The certificate could not be issued.", 500))
    if order.status == AcmeOrder.STATUS_PROCESSING:  # it failed: read what _fail (or another worker) wrote
        order.refresh_from_db()
    if order.status in (AcmeOrder.STATUS_VALID, AcmeOrder.STATUS_INVALID):
        signals.order_finished.send(sender=AcmeOrder, order=order)
    return order


def _fail(order: AcmeOrder, error: dict[str, Any]) -> None:
    AcmeOrder.objects.filter(pk=order.pk, status=AcmeOrder.STATUS_PROCESSING).update(
        status=AcmeOrder.STATUS_INVALID, error=error, processing_since=None, lease_until=None
    )
