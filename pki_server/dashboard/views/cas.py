"""A CA's page: certificate, chain, CRL and OCSP status, ACME settings, recent issuance; its chain as PEM."""

from __future__ import annotations

import re

from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from pki_server.acme.worker import SWEEP_INTERVAL
from pki_server.core import utils
from pki_server.core.admin_views import pem_response
from pki_server.core.models import CertificateAuthority, CertificateRevocationList
from pki_server.core.ocsp_responder import current_responder
from pki_server.dashboard import stats
from pki_server.dashboard.views.access import VIEW_CA, VIEW_CERTIFICATE, staff_required

RECENT_CERTIFICATES = 20

_AFTER_SLASH = re.compile(r"(?<=[^/]/)(?=[^/])")  # after a "/" of a path, not within "//"


def breakable(url: str) -> SafeString:
    """The URL, escaped, with a line-break opportunity (``<wbr>``) after each "/" of its path: in a narrow
    column a long URL then wraps before its serial, not in the middle of it."""
    return mark_safe("<wbr>".join(escape(part) for part in _AFTER_SLASH.split(url)))  # noqa: S308 (escaped)


def _get_ca(serial: str) -> CertificateAuthority:
    ca = CertificateAuthority.objects.defer("key_backend_options").filter(serial=serial.upper()).first()
    if ca is None:
        raise Http404("No CA has this serial.")
    return ca


def _chain(ca: CertificateAuthority) -> list[CertificateAuthority]:
    """The CA and those above it, from one query of all CAs (there are few; a chain is short)."""
    by_pk = {other.pk: other for other in stats.ca_queryset().only("pk", "name", "serial", "parent_id")}
    chain: list[CertificateAuthority] = []
    current = by_pk.get(ca.pk)
    while current is not None and len(chain) <= len(by_pk):  # bounded even if the data had a cycle
        chain.append(current)
        current = by_pk.get(current.parent_id) if current.parent_id else None
    return chain


@staff_required(VIEW_CA, VIEW_CERTIFICATE)
def ca_detail(request: HttpRequest, serial: str) -> HttpResponse:
    ca = _get_ca(serial)
    now = timezone.now()
    crl = CertificateRevocationList.objects.filter(ca=ca).defer("der").order_by("-number").first()
    responder = current_responder(ca, now)
    counts = ca.certificates.aggregate(
        issued=Count("pk"), revoked_count=Count("pk", filter=Q(revoked=True)),
        valid_count=Count("pk", filter=Q(revoked=False, not_before__lte=now, not_after__gt=now)),
    )
    crl_path = reverse("pki_core:crl", args=[ca.serial])
    recent = list(stats.certificate_list_queryset().filter(ca=ca).order_by("-created")[:RECENT_CERTIFICATES])
    return render(request, "dashboard/ca_detail.html", {
        "ca": ca,
        "days_left": (ca.not_after - now).days,
        "key_type": utils.describe_key(ca.pub.public_key()),
        "chain": _chain(ca),
        "crl": crl,
        "crl_stale": crl is not None and crl.next_update <= now,
        "crl_path": crl_path,
        "crl_path_breakable": breakable(crl_path),
        "crl_url_breakable": breakable(ca.crl_url),
        "ocsp_path_breakable": breakable(reverse("pki_core:ocsp", args=[ca.serial])),
        "ocsp_url_breakable": breakable(ca.ocsp_url),
        # Only the responder's certificate: its (encrypted) key stays out of the template.
        "responder_certificate": responder.certificate if responder is not None else None,
        "responder_refresh_seconds": f"{SWEEP_INTERVAL:g}",  # the worker's sweep refreshes responders
        "counts": counts,
        "recent": recent,
        "recent_limit": RECENT_CERTIFICATES,
    })


@staff_required(VIEW_CA)
def ca_bundle(request: HttpRequest, serial: str) -> HttpResponse:
    """The CA's certificate followed by its parents', as one PEM file (the admin's download)."""
    return pem_response(_get_ca(serial), bundle=True)
