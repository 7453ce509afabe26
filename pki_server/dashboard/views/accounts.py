"""ACME accounts: the list, an account's orders, authorizations and challenge outcomes, and deactivation."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from pki_server.acme import accounts
from pki_server.acme.models import AcmeAccount, AcmeChallenge
from pki_server.dashboard.forms import DeactivateAccountForm
from pki_server.dashboard.views.access import CHANGE_ACCOUNT, VIEW_ACCOUNT, staff_required

PAGE_SIZE = 50
#: The account page shows this many of the latest orders and of the latest authorizations.
RECENT = 50

_ACCOUNT_FIELDS = ("slug", "contact", "status", "created", "terms_of_service_agreed", "ca__name", "ca__serial")


def _accounts() -> QuerySet[AcmeAccount]:
    return AcmeAccount.objects.select_related("ca").only(*_ACCOUNT_FIELDS)


@staff_required(VIEW_ACCOUNT)
def account_list(request: HttpRequest) -> HttpResponse:
    queryset = _accounts().annotate(order_count=Count("orders")).order_by("-created", "-pk")
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/account_list.html", {"page": page})


def _get_account(slug: str) -> AcmeAccount:
    account = _accounts().filter(slug=slug).first()
    if account is None:
        raise Http404("No ACME account has this id.")
    return account


def _detail(request: HttpRequest, account: AcmeAccount, form: DeactivateAccountForm | None = None,
            status: int = 200) -> HttpResponse:
    orders = list(
        account.orders.select_related("certificate")
        .only("slug", "status", "identifiers", "expires", "error", "created", "account_id",
              "certificate__serial", "certificate__cn", "certificate__revoked")
        .order_by("-created", "-pk")[:RECENT]
    )
    authorizations = list(
        account.authorizations.prefetch_related(Prefetch("challenges", AcmeChallenge.objects.order_by("pk")))
        .order_by("-created", "-pk")[:RECENT]
    )
    return render(request, "dashboard/account_detail.html", {
        "account": account,
        "orders": orders,
        "authorizations": authorizations,
        "recent": RECENT,
        "can_deactivate": account.status == AcmeAccount.STATUS_VALID and request.user.has_perm(CHANGE_ACCOUNT),
        "deactivate_form": form or DeactivateAccountForm(),
        "invalid_challenge": AcmeChallenge.STATUS_INVALID,
    }, status=status)


@staff_required(VIEW_ACCOUNT)
def account_detail(request: HttpRequest, slug: str) -> HttpResponse:
    return _detail(request, _get_account(slug))


@require_POST
@staff_required(VIEW_ACCOUNT, CHANGE_ACCOUNT)
def account_deactivate(request: HttpRequest, slug: str) -> HttpResponse:
    """RFC 8555 §7.3.6 by the operator, through the same function as the client's own request."""
    account = _get_account(slug)
    form = DeactivateAccountForm(request.POST)
    if not form.is_valid():
        return _detail(request, account, form, status=400)
    detail_url = reverse("dashboard:account", args=[account.slug])
    if account.status != AcmeAccount.STATUS_VALID:
        messages.warning(request, f"Account {account.slug} is {account.status} already; nothing changed.")
        return HttpResponseRedirect(detail_url)
    accounts.deactivate(account)
    messages.success(request, f"Account {account.slug} is deactivated; its pending authorizations are too.")
    return HttpResponseRedirect(detail_url)
