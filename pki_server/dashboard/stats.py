"""What the overview shows, one query each whatever the table sizes (grouped in the database).

Every function works the same on SQLite and PostgreSQL: date truncation and JSON key lookups go
through Django's database functions, and every list is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Count, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDate
from django.utils import timezone

from pki_server.acme.models import AcmeChallenge, AcmeOrder
from pki_server.core.models import Certificate, CertificateAuthority

#: Days of the issuance chart, of the expiry warning, and of the validation failures shown.
WINDOW_DAYS = 30
#: At most this many rows in each overview list.
LIST_LIMIT = 50
#: Delegated OCSP responder certificates are renewed every few days by the server itself: they
#: would drown the certificates people asked for in the chart and the expiry warning.
INTERNAL_PROFILES = ("ocsp",)

#: Columns a list of certificates needs (never ``der`` or ``csr``: status and dates are columns).
CERTIFICATE_LIST_FIELDS = ("serial", "cn", "sans", "profile", "created", "not_before", "not_after", "revoked",
                           "revoked_date", "revoked_reason", "ca__name", "ca__serial")


def ca_queryset() -> QuerySet[CertificateAuthority]:
    """CAs without the columns that pages never show: the key backend's options and the DER."""
    return CertificateAuthority.objects.defer("key_backend_options", "der")


def certificate_list_queryset() -> QuerySet[Certificate]:
    return Certificate.objects.select_related("ca").only(*CERTIFICATE_LIST_FIELDS)


@dataclass(frozen=True)
class CaSummary:
    ca: CertificateAuthority
    status: str  # valid, revoked, expired, not yet valid
    days_left: int

    @property
    def enabled(self) -> bool:
        return self.ca.enabled


def ca_summaries(now: datetime | None = None) -> list[CaSummary]:
    """Every CA (there are few) with its status and the whole days left until it expires."""
    now = now or timezone.now()
    cas = ca_queryset().select_related("parent").defer("parent__key_backend_options", "parent__der")
    return [CaSummary(ca, ca.status, (ca.not_after - now).days) for ca in cas]


def issued_per_day(today: date | None = None, days: int = WINDOW_DAYS) -> list[tuple[date, int]]:
    """Certificates issued on each of the last ``days`` days (UTC), today last, days without any as 0."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=timezone.get_current_timezone())
    counts = dict(
        Certificate.objects.filter(created__gte=start).exclude(profile__in=INTERNAL_PROFILES)
        .annotate(day=TruncDate("created")).order_by().values("day").annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    return [(first + timedelta(days=i), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


def orders_by_status() -> list[tuple[str, int]]:
    """Every order status with its number of orders (0 included), in the order of RFC 8555 §7.1.6."""
    counts = dict(AcmeOrder.objects.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
    return [(status, counts.get(status, 0)) for status, _ in AcmeOrder.STATUSES]


@dataclass(frozen=True)
class FailureGroup:
    challenge_type: str
    problem_type: str  # the problem document's type (urn:ietf:params:acme:error:...), or "" if none
    count: int

    @property
    def short_problem(self) -> str:
        return self.problem_type.rsplit(":", 1)[-1] if self.problem_type else "(no problem document)"


def validation_failures(now: datetime | None = None, days: int = WINDOW_DAYS) -> list[FailureGroup]:
    """Failed challenges of authorizations made in the last ``days`` days, by challenge and problem type."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = (
        AcmeChallenge.objects.filter(status=AcmeChallenge.STATUS_INVALID, authorization__created__gte=since)
        .annotate(problem=KeyTextTransform("type", "error"))
        .values("type", "problem").annotate(n=Count("pk"))
        .order_by("-n", "type", "problem")[:LIST_LIMIT]
    )
    return [FailureGroup(row["type"], row["problem"] or "", row["n"]) for row in rows]


def expiring_soon(now: datetime | None = None, days: int = WINDOW_DAYS) -> list[Certificate]:
    """Unrevoked certificates that expire within ``days`` days, soonest first (OCSP responders left out)."""
    now = now or timezone.now()
    return list(
        certificate_list_queryset()
        .filter(revoked=False, not_after__gt=now, not_after__lte=now + timedelta(days=days))
        .exclude(profile__in=INTERNAL_PROFILES)
        .order_by("not_after")[:LIST_LIMIT]
    )
