"""Accounts: newAccount (RFC 8555 §7.3), the account resource (§7.3.2, §7.3.6), its orders list
(§7.1.2.1) and keyChange (§7.3.5)."""

from __future__ import annotations

from typing import ClassVar

from pki_server.acme import accounts, problems
from pki_server.acme.handlers.base import AcmeHandler, Request, Response
from pki_server.acme.models import AcmeOrder
from pki_server.acme.resources import account_json

ORDERS_PAGE_SIZE = 100


class NewAccountHandler(AcmeHandler):
    signer: ClassVar[str] = "jwk"

    def post(self, request: Request) -> Response:
        assert request.jws is not None and request.jws.jwk is not None
        account, created = accounts.new_account(request.ca, request.jws.jwk, request.payload())
        return Response(
            status=201 if created else 200,
            body=account_json(account, request.urls),
            headers={"Location": request.urls.account(account.slug)},
        )


class AccountHandler(AcmeHandler):
    def post(self, request: Request) -> Response:
        account = request.require_account()
        if request.kwargs["slug"] != account.slug:
            raise problems.unauthorized("The account URL is not the URL of the account that signed the request.")
        assert request.jws is not None
        if not request.jws.is_post_as_get:
            account = accounts.update(account, request.payload())
        return Response(body=account_json(account, request.urls),
                        headers={"Location": request.urls.account(account.slug)})


class AccountOrdersHandler(AcmeHandler):
    """The account's orders, newest first, paginated with Link: rel="next" (§7.1.2.1)."""

    def post(self, request: Request) -> Response:
        account = request.require_account()
        request.require_post_as_get()
        if request.kwargs["slug"] != account.slug:
            raise problems.unauthorized("These are another account's orders.")
        cursor = request.url.partition("?cursor=")[2]
        # §7.1.2.1: pending orders in, invalid ones out.
        orders = AcmeOrder.objects.filter(account=account).exclude(status=AcmeOrder.STATUS_INVALID).order_by("-pk")
        if cursor:
            if not cursor.isdigit():
                raise problems.malformed("The cursor is not valid.")
            orders = orders.filter(pk__lt=int(cursor))
        page = list(orders.values_list("pk", "slug")[: ORDERS_PAGE_SIZE + 1])
        links = []
        if len(page) > ORDERS_PAGE_SIZE:
            page = page[:ORDERS_PAGE_SIZE]
            next_url = f"{request.urls.account_orders(account.slug)}?cursor={page[-1][0]}"
            links.append(f'<{next_url}>;rel="next"')
        return Response(body={"orders": [request.urls.order(slug) for _, slug in page]}, links=links)


class KeyChangeHandler(AcmeHandler):
    def post(self, request: Request) -> Response:
        account = request.require_account()
        assert request.jws is not None
        account = accounts.change_key(account, request.jws, request.urls)
        return Response(body=account_json(account, request.urls),
                        headers={"Location": request.urls.account(account.slug)})
