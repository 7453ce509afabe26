"""Orders: newOrder (RFC 8555 §7.4), the order resource (§7.1.3) and finalize (§7.4)."""

from __future__ import annotations

from pki_server.acme import lookups, orders, problems, worker
from pki_server.acme.handlers.base import AcmeHandler, Request, Response
from pki_server.acme.models import AcmeAuthorization, AcmeOrder
from pki_server.acme.resources import order_json

RETRY_AFTER = "1"  # seconds a client should wait before polling a processing order again


def load_order(request: Request) -> AcmeOrder:
    account = request.require_account()
    order = lookups.order_by_slug.one(request.kwargs["slug"])
    if order is None:
        raise problems.not_found("There is no such order.")
    if order.account_id != account.pk:
        raise problems.unauthorized("This order belongs to another account.")
    order.account = account
    return order


def render(request: Request, order: AcmeOrder, authorizations: list[AcmeAuthorization] | None,
           status: int = 200) -> Response:
    if authorizations is not None:
        slugs = [authz.slug for authz in authorizations]
    else:
        slugs = [authz.slug for authz in lookups.authorizations_of_order.all(order.pk)]
    headers = {"Location": request.urls.order(order.slug)}
    if order.status == AcmeOrder.STATUS_PROCESSING:
        headers["Retry-After"] = RETRY_AFTER
    return Response(status=status, body=order_json(order, slugs, request.urls), headers=headers)


class NewOrderHandler(AcmeHandler):
    def post(self, request: Request) -> Response:
        order, authorizations = orders.new_order(request.require_account(), request.payload())
        return render(request, order, authorizations, status=201)


def owned_order(request: Request) -> AcmeOrder:
    """The order of the URL, as authentication found it with its account, or else by load_order."""
    return request.owned[0] if request.owned else load_order(request)


class OrderHandler(AcmeHandler):
    owned_lookup = lookups.owned_order

    def post(self, request: Request) -> Response:
        request.require_post_as_get()
        order = owned_order(request)
        return render(request, order, orders.refresh_order(order))


class FinalizeHandler(AcmeHandler):
    owned_lookup = lookups.owned_order

    def post(self, request: Request) -> Response:
        order, authorizations = orders.finalize(owned_order(request), request.payload(), issue_now=worker.runs_here())
        response = render(request, order, authorizations)
        if order.status == AcmeOrder.STATUS_PROCESSING:
            response.dispatch.append(("issue", order.pk))
            response.after_issue = (order.pk, lambda: render(request, load_order(request), authorizations))
        return response
