"""ACME problem documents (RFC 8555 §6.7, RFC 7807), built by small constructors.

Handlers raise :class:`AcmeProblem`; the base handler renders it as ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any

URN = "urn:ietf:params:acme:error:"


class AcmeProblem(Exception):
    def __init__(self, type_: str, detail: str, status: int = 400, *,
                 subproblems: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.type = type_ if ":" in type_ else URN + type_
        self.detail = detail
        self.status = status
        self.subproblems = subproblems or []
        self.headers = headers or {}
        self.extra = extra or {}

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status, **self.extra}
        if self.subproblems:
            document["subproblems"] = self.subproblems
        return document


def problem_json(type_: str, detail: str, status: int = 400) -> dict[str, Any]:
    """A problem document stored on an order, authorization or challenge."""
    return AcmeProblem(type_, detail, status).to_json()


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 400)


def bad_nonce(detail: str) -> AcmeProblem:
    return AcmeProblem("badNonce", detail, 400)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, 403)


def account_does_not_exist(detail: str) -> AcmeProblem:
    return AcmeProblem("accountDoesNotExist", detail, 400)


def bad_signature_algorithm(detail: str, algorithms: list[str]) -> AcmeProblem:
    # RFC 8555 §6.2: the problem lists the algorithms the server accepts.
    return AcmeProblem("badSignatureAlgorithm", detail, 400, extra={"algorithms": algorithms})


def bad_public_key(detail: str) -> AcmeProblem:
    return AcmeProblem("badPublicKey", detail, 400)


def invalid_contact(detail: str) -> AcmeProblem:
    return AcmeProblem("invalidContact", detail, 400)


def unsupported_contact(detail: str) -> AcmeProblem:
    return AcmeProblem("unsupportedContact", detail, 400)


def rejected_identifier(detail: str, subproblems: list[dict[str, Any]] | None = None) -> AcmeProblem:
    return AcmeProblem("rejectedIdentifier", detail, 400, subproblems=subproblems)


def unsupported_identifier(detail: str) -> AcmeProblem:
    return AcmeProblem("unsupportedIdentifier", detail, 400)


def bad_csr(detail: str) -> AcmeProblem:
    return AcmeProblem("badCSR", detail, 400)


def order_not_ready(detail: str) -> AcmeProblem:
    return AcmeProblem("orderNotReady", detail, 403)


def already_revoked(detail: str) -> AcmeProblem:
    return AcmeProblem("alreadyRevoked", detail, 400)


def bad_revocation_reason(detail: str) -> AcmeProblem:
    return AcmeProblem("badRevocationReason", detail, 400)


def not_found(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 404)


def method_not_allowed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 405)


def conflict(detail: str, location: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 409, headers={"Location": location})


def server_internal(detail: str = "The server could not process the request; it has been logged.") -> AcmeProblem:
    return AcmeProblem("serverInternal", detail, 500)
