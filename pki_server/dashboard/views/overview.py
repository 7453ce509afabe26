"""The overview: CAs, issuance per day, orders, validation failures, expiring certificates, live feed."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from pki_server.dashboard import charts, stats
from pki_server.dashboard.views.access import VIEW_ACCOUNT, VIEW_CA, VIEW_CERTIFICATE, staff_required


@staff_required(VIEW_CA, VIEW_CERTIFICATE, VIEW_ACCOUNT)
def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    per_day = stats.issued_per_day(now.date())
    return render(request, "dashboard/overview.html", {
        "cas": stats.ca_summaries(now),
        "issuance_chart": charts.issuance_chart(per_day),
        "issued_total": sum(count for _, count in per_day),
        "orders": stats.orders_by_status(),
        "failures": stats.validation_failures(now),
        "expiring": stats.expiring_soon(now),
        "window_days": stats.WINDOW_DAYS,
        "list_limit": stats.LIST_LIMIT,
    })
