"""What a CA publishes to anyone, as plain replies: its certificate (AIA CA-issuers), its CRL (CRL
distribution point) and its OCSP responses.

Both doors use these functions: the lean ASGI endpoints that `serve` routes ahead of Django
(core/endpoints.py: one thread hop, no middleware, no per-request thread) and Django's views
(core/views.py: the test client, `reverse()`, any WSGI deployment). A reply is status, body and
headers; nothing here knows of HTTP frameworks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field

from cryptography.x509.ocsp import OCSPResponseStatus
from django.utils import timezone
from django.utils.http import http_date, parse_http_date_safe

from pki_server.core import ocsp as ocsp_responses
from pki_server.core.models import CertificateAuthority, CertificateRevocationList

log = logging.getLogger("pki_server.core.views")

# An OCSPRequest for one certificate is about 100 bytes; with a signature and certificates a few KiB.
OCSP_REQUEST_MAX_SIZE = 16 * 1024
OCSP_REQUEST_TYPE = "application/ocsp-request"
#: How long caches may keep a CRL (never past its nextUpdate): a new one is signed at each revocation.
CRL_MAX_AGE = 60
TEXT = "text/plain"


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def not_found(text: str) -> Reply:
    return Reply(404, text.encode("utf-8"), TEXT)


def issuer_reply(serial: str) -> Reply:
    """The CA certificate in DER (RFC 5280 §4.2.2.1: application/pkix-cert)."""
    ca = CertificateAuthority.objects.filter(serial=serial.upper()).only("name", "der").first()
    if ca is None:
        return not_found("No CA has this serial.\n")
    return Reply(200, bytes(ca.der), "application/pkix-cert", {
        "Content-Disposition": f'attachment; filename="{ca.name}.der"', "Cache-Control": "public, max-age=86400"})


def pem(der: bytes, label: str) -> bytes:
    """RFC 7468 textual encoding: base64 in lines of 64 characters."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


def crl_reply(serial: str, wanted: str, if_none_match: str = "", if_modified_since: str = "") -> Reply:
    """The latest CRL of the CA with this serial: DER as application/pkix-crl (RFC 2585 §4.2) or
    PEM; 304 for a client that has it already (RFC 9110 §13.1)."""
    wanted = wanted.strip().lower()
    if wanted not in {"der", "pem"}:
        return Reply(400, b"format must be der or pem.\n", TEXT)
    serial = serial.upper()
    latest = (
        CertificateRevocationList.objects.filter(ca__serial=serial).select_related("ca").order_by("-number")
        .only("number", "this_update", "next_update", "der", "ca__name").first()
    )
    if latest is None:
        ca = CertificateAuthority.objects.filter(serial=serial).only("name").first()
        if ca is None:
            return not_found("No CA has this serial.\n")
        return not_found(f"CA {ca.name} has no CRL yet: it is made once the CA's key can be used "
                         "(see docs/revocation.md).\n")
    der = bytes(latest.der)
    left = int((latest.next_update - timezone.now()).total_seconds())
    etag = f'"{latest.number}-{wanted}"'
    last_modified = int(latest.this_update.timestamp())
    headers = {
        "Content-Disposition": f'attachment; filename="{latest.ca.name}.{"pem" if wanted == "pem" else "crl"}"',
        "Cache-Control": f"public, max-age={max(0, min(CRL_MAX_AGE, left))}",
        "ETag": etag,
        "Last-Modified": http_date(last_modified),
    }
    if if_none_match:
        fresh = etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")] or \
            if_none_match.strip() == "*"
    else:
        since = parse_http_date_safe(if_modified_since) if if_modified_since else None
        fresh = since is not None and last_modified <= since
    if fresh:
        return Reply(304, b"", "application/pkix-crl" if wanted == "der" else "application/x-pem-file", headers)
    if wanted == "pem":
        return Reply(200, pem(der, "X509 CRL"), "application/x-pem-file", headers)
    return Reply(200, der, "application/pkix-crl", headers)


def ocsp_request_from_path(encoded: str) -> bytes | None:
    """The DER request of a GET (RFC 6960 Appendix A.1: base64, then URL-encoded; the path is
    URL-decoded already). Also takes the URL-safe alphabet and missing padding."""
    text = "".join(encoded.split()).replace("-", "+").replace("_", "/")
    if not text or len(text) > OCSP_REQUEST_MAX_SIZE * 2:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def ocsp_reply(method: str, serial: str, der: bytes | None) -> Reply:
    """The OCSP responder of the CA with this serial (RFC 6960; GET caching as in RFC 5019 §6).
    ``der`` is the request (None when it could not be read: a malformed request)."""
    try:
        answer = ocsp_responses.respond(serial, der or b"")
    except Exception:  # an OCSP client understands internalError (RFC 6960 §2.3), not an HTML 500
        log.exception("OCSP request for CA %s failed.", serial)
        answer = ocsp_responses.unsuccessful(OCSPResponseStatus.INTERNAL_ERROR)
    if answer is None:
        return not_found("No such CA.\n")
    reply = Reply(200, answer.der, "application/ocsp-response")
    if method == "POST" or not answer.successful:
        reply.headers["Cache-Control"] = "no-store"
        return reply
    assert answer.this_update is not None and answer.next_update is not None
    max_age = max(0, int((answer.next_update - timezone.now()).total_seconds()))
    reply.headers.update({
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "Last-Modified": http_date(answer.this_update.timestamp()),
        "Expires": http_date(answer.next_update.timestamp()),
        "ETag": f'"{hashlib.sha256(answer.der).hexdigest()}"',
    })
    return reply
