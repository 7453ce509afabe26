"""Certificate download (RFC 8555 §7.4.2) and revocation (§7.6)."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from cryptography import x509
from django.utils import timezone

from pki_server.acme import jose, lookups, problems
from pki_server.acme.handlers.base import AcmeHandler, Request, Response
from pki_server.acme.models import AcmeAuthorization, AcmeOrder, one
from pki_server.core.exceptions import AlreadyRevoked
from pki_server.core.extensions import subject_alternative_names
from pki_server.core.models import Certificate
from pki_server.core.utils import int_to_hex

# RFC 5280 §5.3.1 codes a subscriber may give: unspecified, keyCompromise, affiliationChanged,
# superseded, cessationOfOperation, privilegeWithdrawn. CA-side reasons, certificateHold and
# removeFromCRL are refused.
REVOCATION_REASONS = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    9: x509.ReasonFlags.privilege_withdrawn,
}


class CertificateHandler(AcmeHandler):
    owned_lookup = lookups.owned_order_with_certificate

    def post(self, request: Request) -> Response:
        account = request.require_account()
        request.require_post_as_get()
        order = request.owned[0] if request.owned else lookups.order_with_certificate.one(request.kwargs["slug"])
        if order is None or order.certificate is None:
            raise problems.not_found("There is no such certificate.")
        if order.account_id != account.pk:
            raise problems.unauthorized("This certificate belongs to another account.")
        if order.certificate.ca_id == request.ca.pk:
            order.certificate.ca = request.ca  # loaded with its parent already
        return Response(body=order.certificate.bundle_pem.encode("ascii"),
                        content_type="application/pem-certificate-chain")


class RevokeCertHandler(AcmeHandler):
    signer: ClassVar[str] = "either"

    def post(self, request: Request) -> Response:
        payload = request.payload()
        der = jose.b64decode(payload.get("certificate"), "certificate")
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise problems.malformed("The certificate cannot be parsed (it must be DER, base64url-encoded).") from None
        reason_code = payload.get("reason", 0)
        if not isinstance(reason_code, int) or isinstance(reason_code, bool) or reason_code not in REVOCATION_REASONS:
            allowed = ", ".join(str(code) for code in REVOCATION_REASONS)
            raise problems.bad_revocation_reason(f"The reason {reason_code!r} is not accepted; use one of {allowed}.")
        cert = one(Certificate.objects.filter(serial=int_to_hex(certificate.serial_number), ca=request.ca))
        if cert is None or bytes(cert.der) != der:
            raise problems.not_found("This CA did not issue that certificate.")

        assert request.jws is not None
        if request.jws.jwk is not None:
            # Signed by the certificate's own key (§7.6).
            certificate_jwk = jose.canonical_jwk(jose.jwk_from_key(certificate.public_key()))  # type: ignore[arg-type]
            if jose.canonical_jwk(request.jws.jwk) != certificate_jwk:
                raise problems.unauthorized("The request is signed neither by an account nor by the certificate's key.")
        elif not self._account_may_revoke(request, cert, certificate):
            raise problems.unauthorized(
                "This account neither ordered the certificate nor holds valid authorizations for all its names."
            )
        try:
            cert.revoke(REVOCATION_REASONS[reason_code])
        except AlreadyRevoked:
            raise problems.already_revoked("The certificate is revoked already.") from None
        return Response(status=200, body=b"", content_type="text/plain")

    @staticmethod
    def _account_may_revoke(request: Request, cert: Certificate, certificate: x509.Certificate) -> bool:
        account = request.require_account()
        if AcmeOrder.objects.filter(certificate=cert, account=account).exists():
            return True
        names = subject_alternative_names(certificate)
        if not names:
            return False
        valid = AcmeAuthorization.objects.filter(
            account=account, status=AcmeAuthorization.STATUS_VALID, expires__gt=timezone.now()
        )
        for name in names:
            if isinstance(name, x509.DNSName):
                value, kind = name.value.removeprefix("*."), "dns"
            elif isinstance(name, x509.IPAddress) and isinstance(name.value, ipaddress.IPv4Address
                                                                   | ipaddress.IPv6Address):
                value, kind = name.value.compressed, "ip"
            else:
                return False
            if not valid.filter(identifier_type=kind, identifier=value).exists():
                return False
        return True


