"""Public, unauthenticated resources a CA publishes, as Django views: its certificate at the AIA
CA-issuers URL, its CRL at the CRL distribution point, and its OCSP responder.

`serve` answers these paths with the lean endpoints of core/endpoints.py, ahead of Django; these
views give the same replies (core/publication.py) to Django's test client, `reverse()` and any
WSGI deployment.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from pki_server.core import publication
from pki_server.core.publication import OCSP_REQUEST_MAX_SIZE, OCSP_REQUEST_TYPE, Reply


def _response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, content_type=reply.content_type, status=reply.status)
    for name, value in reply.headers.items():
        response[name] = value
    return response


@require_safe
def issuer_certificate(request: HttpRequest, serial: str) -> HttpResponse:
    return _response(publication.issuer_reply(serial))


@require_safe
def crl(request: HttpRequest, serial: str, encoding: str = "der") -> HttpResponse:
    return _response(publication.crl_reply(
        serial, request.GET.get("format", encoding), request.headers.get("If-None-Match", ""),
        request.headers.get("If-Modified-Since", "")))


def _ocsp_request_from_body(request: HttpRequest) -> bytes | None:
    """The DER request of a POST (RFC 6960 Appendix A.1: Content-Type application/ocsp-request)."""
    if request.content_type != OCSP_REQUEST_TYPE:
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
    if request.method == "POST":
        der = _ocsp_request_from_body(request) if encoded is None else None
    else:
        der = publication.ocsp_request_from_path(encoded) if encoded is not None else None
    return _response(publication.ocsp_reply(request.method or "GET", serial, der))
