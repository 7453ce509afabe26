"""Authorizations (RFC 8555 §7.5, deactivation §7.5.2) and challenges (§7.5.1)."""

from __future__ import annotations

from typing import Any

from pki_server.acme import lookups, orders, problems, worker
from pki_server.acme.handlers.base import AcmeHandler, Request, Response
from pki_server.acme.models import AcmeAccount, AcmeChallenge
from pki_server.acme.resources import authorization_json, challenge_json

RETRY_AFTER = "1"


def _owned(request: Request, account_id: int) -> None:
    if account_id != request.require_account().pk:
        raise problems.unauthorized("This authorization belongs to another account.")


class _ChallengesOwned(AcmeHandler):
    """Handlers whose owned_lookup finds challenges, each with its authorization and account."""

    @staticmethod
    def owner_of(resource: Any) -> AcmeAccount:
        return resource.authorization.account  # type: ignore[no-any-return]


class AuthorizationHandler(_ChallengesOwned):
    owned_lookup = lookups.owned_challenges_of_authorization

    def post(self, request: Request) -> Response:
        challenges = request.owned or lookups.challenges_of_authorization.all(request.kwargs["slug"])
        authz = challenges[0].authorization if challenges else lookups.authorization_by_slug.one(request.kwargs["slug"])
        if authz is None:
            raise problems.not_found("There is no such authorization.")
        _owned(request, authz.account_id)
        assert request.jws is not None
        if request.jws.is_post_as_get:
            orders.refresh_authorization(authz)
        else:
            payload = request.payload()
            if payload.get("status") != "deactivated":
                raise problems.malformed('To change an authorization, send {"status": "deactivated"}.')
            orders.deactivate_authorization(authz)
        headers = {"Location": request.urls.authorization(authz.slug)}
        if any(c.status == AcmeChallenge.STATUS_PROCESSING for c in challenges):
            headers["Retry-After"] = RETRY_AFTER
        return Response(body=authorization_json(authz, challenges, request.urls), headers=headers)


class ChallengeHandler(_ChallengesOwned):
    owned_lookup = lookups.owned_challenge

    def post(self, request: Request) -> Response:
        challenge = request.owned[0] if request.owned else lookups.challenge_by_slug.one(request.kwargs["slug"])
        if challenge is None:
            raise problems.not_found("There is no such challenge.")
        _owned(request, challenge.authorization.account_id)
        assert request.jws is not None
        response = Response(links=[f'<{request.urls.authorization(challenge.authorization.slug)}>;rel="up"'])
        if not request.jws.is_post_as_get:
            request.payload()  # must be a JSON object; RFC 8555 §7.5.1 sends {}
            # With a worker in this process, the challenge is claimed now and validated here: no
            # wake-up message, no second trip to the database to claim it.
            lease = worker.local_validation_lease()
            if orders.start_challenge(challenge, request.jws.kid or "", lease):
                if lease is None:
                    response.dispatch.append(("validate", challenge.pk))
                else:
                    response.validate_here.append(
                        (challenge.pk, worker.job_for(challenge, request.require_account(), request.ca)))
        if challenge.status == AcmeChallenge.STATUS_PROCESSING:
            response.headers["Retry-After"] = RETRY_AFTER
        response.body = challenge_json(challenge, request.urls)
        return response
