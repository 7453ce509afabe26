"""Each ACME request makes a small, fixed number of database queries, whatever the table sizes.

The counts are pinned: a change that adds a query to a request fails here and has to say why.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki_server.acme import orders
from pki_server.acme.jose import b64encode
from pki_server.acme.models import AcmeAuthorization, AcmeChallenge, AcmeOrder
from tests.acme.asgi_client import AsgiAcmeClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory", "database"])
def nonce_store(request: pytest.FixtureRequest, settings) -> int:  # type: ignore[no-untyped-def]
    """Each nonce store; the number of queries spending a nonce takes (the database's: one INSERT)."""
    settings.PKI_ACME_NONCE_STORE = request.param
    return 1 if request.param == "database" else 0


@pytest.fixture
def client(asgi_client: AsgiAcmeClient) -> AsgiAcmeClient:
    return asgi_client


def csr_for(*names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return b64encode(csr.public_bytes(serialization.Encoding.DER))


def test_query_counts(client: AsgiAcmeClient, nonce_store: int, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(1):  # the CA: the first request since it was saved
        assert client.request("GET", "/acme/directory").status_code == 200
    with django_assert_num_queries(1):  # the CA by its name: its own entry in the cache
        assert client.request("HEAD", f"{client.prefix}/new-nonce").status_code == 200
    with django_assert_num_queries(0):  # now from the process's cache (acme/cas.py)
        assert client.request("HEAD", f"{client.prefix}/new-nonce").status_code == 200
    client.new_nonce()
    # Every POST: spend the nonce (an INSERT in the database store), then the account by kid (1) or by key.
    with django_assert_num_queries(nonce_store + 4):  # account by key, BEGIN + INSERT + COMMIT
        assert client.new_account().status_code == 201
    with django_assert_num_queries(nonce_store + 1):
        assert client.post(client.kid).status_code == 200

    names = ["a.example.com", "b.example.com"]
    # + BEGIN, per name: reusable authz? + authz + challenges, order, order-authz links, COMMIT
    with django_assert_num_queries(nonce_store + 11):
        response = client.post("new-order", {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert response.status_code == 201, response.text
    order_url = response.headers["Location"]
    authz_urls = response.json()["authorizations"]

    # An owned resource comes with its account, in one query (AcmeHandler.owned_lookup).
    with django_assert_num_queries(nonce_store + 2):  # order with account, its authorizations
        assert client.post(order_url).json()["status"] == "pending"
    with django_assert_num_queries(nonce_store + 1):  # the authorization's challenges with authorization and account
        authz = client.post(authz_urls[0]).json()
    challenge_url = next(c["url"] for c in authz["challenges"] if c["type"] == "http-01")
    with django_assert_num_queries(nonce_store + 2):  # challenge with authorization and account, the UPDATE
        response = client.post(challenge_url, {})
    assert response.json()["status"] == "processing"

    # The worker's side: validations succeed (as orders.finish_validation records them).
    for challenge in AcmeChallenge.objects.filter(type="http-01"):
        AcmeChallenge.objects.filter(pk=challenge.pk).update(status="processing")
        assert orders.finish_validation(challenge.pk, True, [], None)
    assert AcmeOrder.objects.get().status == "ready"

    with django_assert_num_queries(nonce_store + 3):  # order with account, its authorizations, the UPDATE
        response = client.post(f"{order_url}/finalize", {"csr": csr_for(*names)})
    assert response.json()["status"] == "processing", response.text
    order = AcmeOrder.objects.get()
    assert orders.claim(AcmeOrder, order.pk, orders.timedelta(seconds=60))
    assert orders.issue(order.pk).status == "valid"
    with django_assert_num_queries(nonce_store + 2):  # order with account, its authorizations
        body = client.post(order_url).json()
    with django_assert_num_queries(nonce_store + 1):  # order with account and certificate
        assert client.post(body["certificate"]).status_code == 200


def test_counts_do_not_grow_with_tables(client: AsgiAcmeClient, nonce_store: int,
                                        django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    client.new_account()
    for index in range(30):
        client.post("new-order", {"identifiers": [{"type": "dns", "value": f"n{index}.example.com"}]})
    assert AcmeAuthorization.objects.count() == 30
    with django_assert_num_queries(nonce_store + 1):
        assert client.post(client.kid).status_code == 200
    with django_assert_num_queries(nonce_store + 2):
        assert len(client.post(f"{client.kid}/orders").json()["orders"]) == 30
    with django_assert_num_queries(nonce_store + 11):  # as for the first order
        response = client.post("new-order", {"identifiers": [{"type": "dns", "value": f"x{i}.example.com"}
                                                             for i in range(2)]})
    assert response.status_code == 201
