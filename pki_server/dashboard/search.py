"""Finding certificates: by common name, subject alternative name or serial, and the list's filters."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from pki_server.core.admin_views import status_for_queryset_filter
from pki_server.core.models import Certificate

# Hex, optionally in colon-separated bytes as `openssl x509 -serial` and browsers print serials.
_SERIAL = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*|[0-9A-Fa-f]+")


def normalize_serial(term: str) -> str | None:
    """The stored form of a serial (upper-case hex, no colons, no leading zeros), or None if ``term``
    cannot be one."""
    term = term.strip()
    if not _SERIAL.fullmatch(term):
        return None
    return term.replace(":", "").upper().lstrip("0") or "0"


def search(queryset: QuerySet[Certificate], term: str) -> QuerySet[Certificate]:
    """Certificates whose CN or SANs contain ``term`` (any case), or whose serial contains it."""
    term = term.strip()
    if not term:
        return queryset
    # SANs are stored as "DNS:a.example,IP:192.0.2.1": "alt.example" and "DNS:alt.example" both match.
    condition = Q(cn__icontains=term) | Q(sans__icontains=term)
    serial = normalize_serial(term)
    if serial is not None:
        condition |= Q(serial__contains=serial)
    return queryset.filter(condition)


def apply_filters(queryset: QuerySet[Certificate], values: dict[str, Any]) -> QuerySet[Certificate]:
    """The certificate list's filters from :class:`~pki_server.dashboard.forms.CertificateFilterForm`'s
    cleaned data: ``q``, ``ca`` (a CA's pk), ``status`` and ``expiring`` (days; unrevoked, not expired)."""
    queryset = search(queryset, values.get("q") or "")
    if values.get("ca") is not None:
        queryset = queryset.filter(ca_id=values["ca"])
    queryset = status_for_queryset_filter(values.get("status") or None, queryset)
    if values.get("expiring") is not None:
        now = timezone.now()
        queryset = queryset.filter(revoked=False, not_after__gt=now,
                                   not_after__lte=now + timedelta(days=values["expiring"]))
    return queryset
