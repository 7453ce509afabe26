"""Public, unauthenticated resources a CA publishes: its certificate at the AIA CA-issuers URL."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from pki_server.core.models import CertificateAuthority


@require_safe
def issuer_certificate(request: HttpRequest, serial: str) -> HttpResponse:
    """The CA certificate in DER (RFC 5280 §4.2.2.1: application/pkix-cert)."""
    ca = get_object_or_404(CertificateAuthority, serial=serial.upper())
    response = HttpResponse(bytes(ca.der), content_type="application/pkix-cert")
    response["Content-Disposition"] = f'attachment; filename="{ca.name}.der"'
    response["Cache-Control"] = "public, max-age=86400"
    return response
