"""Public, unauthenticated resources a CA publishes: its certificate at the AIA CA-issuers URL,
its CRL at the CRL distribution point, and its OCSP responder."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging

from cryptography.x509.ocsp import OCSPResponseStatus
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from pki_server.core import ocsp as ocsp_responses
from pki_server.core.models import CertificateAuthority, CertificateRevocationList

log = logging.getLogger(__name__)

# An OCSPRequest for one certificate is about 100 bytes; with a signature and certificates a few KiB.
OCSP_REQUEST_MAX_SIZE = 16 * 1024


@require_safe
def issuer_certificate(request: HttpRequest, serial: str) -> HttpResponse:
    """The CA certificate in DER (RFC 5280 §4.2.2.1: application/pkix-cert)."""
    ca = get_object_or_404(CertificateAuthority, serial=serial.upper())
    response = HttpResponse(bytes(ca.der), content_type="application/pkix-cert")
    response["Content-Disposition"] = f'attachment; filename="{ca.name}.der"'
    response["Cache-Control"] = "public, max-age=86400"
    return response


#: How long caches may keep a CRL (never past its nextUpdate): a new one is signed at each revocation.
CRL_MAX_AGE = 60


def _pem(der: bytes, label: str) -> bytes:
    """RFC 7468 textual encoding: base64 in lines of 64 characters."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


@require_safe
def crl(request: HttpRequest, serial: str, encoding: str = "der") -> HttpResponse:
    """The latest CRL of the CA with this serial: DER as application/pkix-crl (RFC 2585 §4.2), or
    PEM for ``.pem`` or ``?format=pem``. Stored, so that processes without CA keys serve it too."""
    wanted = request.GET.get("format", encoding).strip().lower()
    if wanted not in {"der", "pem"}:
        return HttpResponseBadRequest("format must be der or pem.\n", content_type="text/plain")
    serial = serial.upper()
    latest = (
        CertificateRevocationList.objects.filter(ca__serial=serial).select_related("ca").order_by("-number")
        .only("number", "this_update", "next_update", "der", "ca__name").first()
    )
    if latest is None:
        ca = CertificateAuthority.objects.filter(serial=serial).only("name").first()
        if ca is None:
            return HttpResponseNotFound("No CA has this serial.\n", content_type="text/plain")
        return HttpResponseNotFound(
            f"CA {ca.name} has no CRL yet: it is made once the CA's key can be used (see docs/revocation.md).\n",
            content_type="text/plain",
        )
    der = bytes(latest.der)
    if wanted == "pem":
        response = HttpResponse(_pem(der, "X509 CRL"), content_type="application/x-pem-file")
    else:
        response = HttpResponse(der, content_type="application/pkix-crl")
    response["Content-Disposition"] = f'attachment; filename="{latest.ca.name}.{"pem" if wanted == "pem" else "crl"}"'
    left = int((latest.next_update - timezone.now()).total_seconds())
    response["Cache-Control"] = f"public, max-age={max(0, min(CRL_MAX_AGE, left))}"
    etag = f'"{latest.number}-{wanted}"'
    last_modified = int(latest.this_update.timestamp())
    response["ETag"] = etag
    response["Last-Modified"] = http_date(last_modified)
    return get_conditional_response(request, etag=etag, last_modified=last_modified, response=response) or response


def _ocsp_request_from_path(encoded: str) -> bytes | None:
    """The DER request of a GET (RFC 6960 Appendix A.1: base64, then URL-encoded; Django has
    URL-decoded the path already). Also takes the URL-safe alphabet and missing padding."""
    text = "".join(encoded.split()).replace("-", "+").replace("_", "/")
    if not text or len(text) > OCSP_REQUEST_MAX_SIZE * 2:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _ocsp_request_from_body(request: HttpRequest) -> bytes | None:
    """The DER request of a POST (RFC 6960 Appendix A.1: Content-Type application/ocsp-request)."""
    if request.content_type != "application/ocsp-request":
        return None
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > OCSP_REQUEST_MAX_SIZE:
            return None
        body = request.body
    except (ValueError, RequestDataTooBig):
        return None
    return body if 0 < len(body) <= OCSP_REQUEST_MAX_SIZE else None


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def ocsp(request: HttpRequest, serial: str, encoded: str | None = None) -> HttpResponse:
    """The OCSP responder of the CA with this serial (RFC 6960; GET caching as in RFC 5019 §6)."""
    if request.method == "POST":
        der = _ocsp_request_from_body(request) if encoded is None else None
    else:
        der = _ocsp_request_from_path(encoded) if encoded is not None else None
    try:
        answer = ocsp_responses.respond(serial, der or b"")
    except Exception:  # an OCSP client understands internalError (RFC 6960 §2.3), not an HTML 500
        log.exception("OCSP request for CA %s failed.", serial)
        answer = ocsp_responses.unsuccessful(OCSPResponseStatus.INTERNAL_ERROR)
    if answer is None:
        raise Http404("No such CA.")
    response = HttpResponse(answer.der, content_type="application/ocsp-response")
    if request.method == "POST" or not answer.successful:
        response["Cache-Control"] = "no-store"
        return response
    assert answer.this_update is not None and answer.next_update is not None
    max_age = max(0, int((answer.next_update - timezone.now()).total_seconds()))
    response["Cache-Control"] = f"max-age={max_age}, public, no-transform, must-revalidate"
    response["Last-Modified"] = http_date(answer.this_update.timestamp())
    response["Expires"] = http_date(answer.next_update.timestamp())
    response["ETag"] = f'"{hashlib.sha256(answer.der).hexdigest()}"'
    return response
