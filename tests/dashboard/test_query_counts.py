"""Each dashboard page makes a small, fixed number of queries, whatever the table sizes.

The counts are pinned: a change that adds a query to a page fails here and has to say why. Each
page is measured, then measured again after more rows of every kind were added.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pki_server.core.models import CertificateAuthority
from pki_server.core.ocsp_responder import refresh_ocsp_responders
from tests.dashboard import pages_fixtures
from tests.dashboard.pages_fixtures import AcmeRows, finish, issue, new_account, new_order

pytestmark = pytest.mark.django_db

# The shared fixtures of the dashboard's tests (pages_fixtures.py).
acme = pages_fixtures.acme
certs = pages_fixtures.certs
staff = pages_fixtures.staff
staff_client = pages_fixtures.staff_client

# Every page: the session and the user (2), then what the page itself needs.
EXPECTED = {
    # CAs with parents, issuance per day, orders by status, failures by type, expiring certificates
    "overview": 2 + 5,
    # the CA, its latest CRL, its OCSP responder, certificate counts, recent certificates, all CAs (chain)
    "ca": 2 + 6,
    "ca-bundle": 2 + 1 + 1,  # the CA, then its parent (one per level: the chain is root + intermediate)
    # CAs for the filter, the page's count and rows
    "certificates": 2 + 3,
    "certificates-search": 2 + 3,
    "certificate": 2 + 1,  # the certificate with its CA and ACME order (joined)
    "certificate-pem": 2 + 1,
    "accounts": 2 + 2,  # count, rows with their number of orders
    "account": 2 + 4,  # the account with its CA, orders with certificates, authorizations, challenges
}


def urls(ca: CertificateAuthority, rows: AcmeRows) -> dict[str, str]:
    return {
        "overview": reverse("dashboard:overview"),
        "ca": reverse("dashboard:ca", args=[ca.serial]),
        "ca-bundle": reverse("dashboard:ca-bundle", args=[ca.serial]),
        "certificates": reverse("dashboard:certificates") + "?status=valid&expiring=90",
        "certificates-search": reverse("dashboard:certificates") + f"?q=example&ca={ca.pk}",
        "certificate": reverse("dashboard:certificate", args=[rows.certificate.serial]),
        "certificate-pem": reverse("dashboard:certificate-pem", args=[rows.certificate.serial]),
        "accounts": reverse("dashboard:accounts"),
        "account": reverse("dashboard:account", args=[rows.account.slug]),
    }


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


def add_rows(ca: CertificateAuthority, rows: AcmeRows) -> None:
    """More of everything: certificates, accounts, orders, authorizations, failed challenges."""
    for index in range(5):
        issue(ca, f"more{index}.example.com", sans=[f"more{index}.example.com"])
    for index in range(3):
        _, (authz,) = new_order(rows.account, f"extra{index}.example.com")
        finish(authz, "http-01", ("unauthorized", f"wrong content at extra{index}"))
        new_order(new_account(ca), f"other{index}.example.com")
    refresh_ocsp_responders()


def test_query_counts(staff_client: Client, intermediate: CertificateAuthority, certs: object,
                      acme: AcmeRows) -> None:
    pages = urls(intermediate, acme)
    first = {name: count_queries(staff_client, url) for name, url in pages.items()}
    assert first == EXPECTED
    add_rows(intermediate, acme)
    assert {name: count_queries(staff_client, url) for name, url in pages.items()} == EXPECTED
