"""End to end against `pki-server serve`: the directory, newNonce and accounts (RFC 8555 §7.1.1, §7.2, §7.3).

Clients are the `acme` library's ClientV2 (ES256 and RS256 keys) and, for EdDSA keys that josepy cannot
hold, requests signed by hand (tests/acme/flow_helpers.py). Every test checks what the server stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from acme import client, errors, messages

from tests.acme.flow_helpers import (
    JOSE,
    URN,
    PrivateKey,
    RawClient,
    account_row,
    account_url,
    acme_client,
    algorithm,
    assert_problem,
    b64,
    ec_key,
    new_order,
    no_new_tracebacks,
    order_count,
    post,
    private_key_of,
    public_jwk,
    register,
    rsa_key,
    sign_jws,
    table_counts,
    thumbprint,
    unique_name,
)
from tests.acme.flow_helpers import regr as registration
from tests.acme.server import PkiServer

DIRECTORY_FIELDS = {"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "meta"}


@pytest.fixture(autouse=True)
def _server_log_clean(pki_server: PkiServer) -> Iterator[None]:
    with no_new_tracebacks(pki_server):
        yield


def index_link(response: httpx.Response) -> str:
    """The URL of the Link rel="index" header (RFC 8555 §7.1)."""
    links = [part.strip() for part in response.headers["Link"].split(",")]
    index = [link for link in links if link.endswith(';rel="index"')]
    assert len(index) == 1, response.headers["Link"]
    return index[0].split(";")[0].strip("<>")


# --- Directory and nonces ----------------------------------------------------------------------------

def test_directory(pki_server: PkiServer) -> None:
    default = httpx.get(pki_server.directory_url)
    named = httpx.get(f"{pki_server.base_url}/acme/intermediate/directory")
    for response in (default, named):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Replay-Nonce"]
        document = response.json()
        assert set(document) == DIRECTORY_FIELDS
        assert document["meta"]["externalAccountRequired"] is False
        prefix = f"{pki_server.base_url}/acme/intermediate/"
        for field in DIRECTORY_FIELDS - {"meta"}:
            assert document[field].startswith(prefix), document
    # The default directory is the only ACME-enabled CA's.
    assert default.json() == named.json()
    assert index_link(default) == pki_server.directory_url
    assert index_link(named) == f"{pki_server.base_url}/acme/intermediate/directory"


@pytest.mark.parametrize("path", ["/acme/nope/directory", "/acme/root/directory", "/acme/nope/new-nonce"])
def test_directory_of_unknown_or_non_acme_ca_is_404(pki_server: PkiServer, path: str) -> None:
    response = httpx.get(pki_server.base_url + path)
    document = assert_problem(response, 404, "malformed")
    ca = path.split("/")[2]
    assert repr(ca) in document["detail"]
    assert index_link(response).endswith("/directory")


def test_new_nonce(pki_server: PkiServer) -> None:
    url = httpx.get(pki_server.directory_url).json()["newNonce"]
    head = httpx.head(url)
    get = httpx.get(url)
    assert head.status_code == 200
    assert get.status_code == 204
    assert get.content == b""
    for response in (head, get):
        assert response.headers["Cache-Control"] == "no-store"
        assert len(response.headers["Replay-Nonce"]) >= 22  # RFC 8555 §6.5.1: at least 128 bits
        assert index_link(response) == f"{pki_server.base_url}/acme/intermediate/directory"
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    # Issuing a nonce writes nothing (the nonces are stateless until spent).
    before = pki_server.count("pki_acme_acmenonce")
    for _ in range(5):
        httpx.head(url)
    assert pki_server.count("pki_acme_acmenonce") == before


def test_post_to_new_nonce_is_refused(pki_server: PkiServer) -> None:
    url = httpx.get(pki_server.directory_url).json()["newNonce"]
    response = httpx.post(url, content=b"{}", headers={"Content-Type": JOSE})
    assert_problem(response, 405, "malformed")
    assert "GET" in response.headers["Allow"]


# --- newAccount ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_key", [ec_key, rsa_key], ids=["ES256", "RS256"])
def test_new_account_with_client_v2(pki_server: PkiServer, make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    before = pki_server.count("pki_acme_acmeaccount")
    acme = acme_client(pki_server, key)
    regr = acme.new_account(messages.NewRegistration(contact=("mailto:admin@example.com",),
                                                     terms_of_service_agreed=True))
    assert regr.uri.startswith(f"{pki_server.base_url}/acme/intermediate/acct/")
    assert regr.body.status == "valid"
    assert regr.body.contact == ("mailto:admin@example.com",)
    assert pki_server.count("pki_acme_acmeaccount") == before + 1
    _id, status, contact, stored_thumbprint = account_row(pki_server, regr.uri)
    assert (status, json.loads(contact)) == ("valid", ["mailto:admin@example.com"])
    assert stored_thumbprint == thumbprint(key)

    # The same key again: 200 with the same Location (RFC 8555 §7.3.1), nothing new.
    again = post(acme, acme.directory["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True)
    assert again.status_code == 200
    assert again.headers["Location"] == regr.uri
    assert again.json()["status"] == "valid"
    with pytest.raises(errors.ConflictError) as conflict:  # how ClientV2 reports "exists already"
        acme_client(pki_server, key).new_account(messages.NewRegistration(terms_of_service_agreed=True))
    assert conflict.value.location == regr.uri
    assert pki_server.count("pki_acme_acmeaccount") == before + 1


def test_new_account_with_eddsa_key(pki_server: PkiServer) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    raw = RawClient(pki_server, key)
    created = raw.new_account(contact=["mailto:ed@example.com"])
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "valid"
    location = created.headers["Location"]
    assert account_row(pki_server, location)[3] == thumbprint(key)
    assert index_link(created) == f"{pki_server.base_url}/acme/intermediate/directory"

    again = raw.new_account()
    assert again.status_code == 200
    assert again.headers["Location"] == location

    # EdDSA-signed requests with the kid work as well: POST-as-GET of the account.
    fetched = raw.post(location)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["contact"] == ["mailto:ed@example.com"]


def test_only_return_existing(pki_server: PkiServer) -> None:
    acme = acme_client(pki_server)
    before = table_counts(pki_server)
    response = post(acme, acme.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert_problem(response, 400, "accountDoesNotExist")
    assert table_counts(pki_server) == before

    regr = acme.new_account(messages.NewRegistration(terms_of_service_agreed=True))
    existing = post(acme, acme.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert existing.status_code == 200
    assert existing.headers["Location"] == regr.uri
    # ClientV2 finds its account this way too.
    assert acme.query_registration(regr).uri == regr.uri


@pytest.mark.parametrize(("contact", "kind"), [
    ("tel:+15555550100", "unsupportedContact"),
    ("https://example.com/me", "unsupportedContact"),
    ("mailto:not-an-address", "invalidContact"),
    ("mailto:a@example.com,b@example.com", "invalidContact"),
    ("mailto:a@example.com?subject=hello", "invalidContact"),
])
def test_new_account_with_bad_contact_writes_nothing(pki_server: PkiServer, contact: str, kind: str) -> None:
    acme = acme_client(pki_server)
    before = table_counts(pki_server)
    response = post(acme, acme.directory["newAccount"],
                    {"contact": [contact], "termsOfServiceAgreed": True}, use_jwk=True)
    assert_problem(response, 400, kind)
    assert table_counts(pki_server) == before


# --- The account resource ------------------------------------------------------------------------------

def test_account_post_as_get_and_contact_update(pki_server: PkiServer) -> None:
    acme = register(pki_server, contact=("mailto:first@example.com",))
    regr = registration(acme)
    fetched = post(acme, regr.uri)
    assert fetched.status_code == 200
    assert fetched.headers["Location"] == regr.uri
    assert fetched.json()["contact"] == ["mailto:first@example.com"]
    assert fetched.json()["orders"] == f"{regr.uri}/orders"

    updated = acme.update_registration(regr, regr.body.update(contact=("mailto:second@example.com",
                                                                        "mailto:third@example.com")))
    assert updated.body.contact == ("mailto:second@example.com", "mailto:third@example.com")
    assert json.loads(account_row(pki_server, regr.uri)[2]) == ["mailto:second@example.com",
                                                                 "mailto:third@example.com"]

    for contact, kind in [("tel:+15555550100", "unsupportedContact"), ("mailto:nobody", "invalidContact"),
                          ("mailto:x@example.com?body=x", "invalidContact")]:
        refused = post(acme, regr.uri, {"contact": [contact]})
        assert_problem(refused, 400, kind)
        assert json.loads(account_row(pki_server, regr.uri)[2]) == ["mailto:second@example.com",
                                                                     "mailto:third@example.com"]
    # A status other than "deactivated" is not the client's to set (RFC 8555 §7.3.6).
    assert_problem(post(acme, regr.uri, {"status": "revoked"}), 400, "malformed")
    assert account_row(pki_server, regr.uri)[1] == "valid"

    # An empty list removes the contacts.
    cleared = post(acme, regr.uri, {"contact": []})
    assert cleared.status_code == 200
    assert cleared.json()["contact"] == []
    assert json.loads(account_row(pki_server, regr.uri)[2]) == []


def test_another_accounts_url_is_unauthorized(pki_server: PkiServer) -> None:
    alice, bob = register(pki_server, contact=("mailto:alice@example.com",)), register(pki_server)
    alice_url = account_url(alice)
    assert_problem(post(bob, alice_url), 403, "unauthorized")
    assert_problem(post(bob, alice_url, {"contact": ["mailto:mallory@example.com"]}), 403, "unauthorized")
    assert_problem(post(bob, alice_url, {"status": "deactivated"}), 403, "unauthorized")
    assert_problem(post(bob, f"{alice_url}/orders"), 403, "unauthorized")
    assert account_row(pki_server, alice_url)[1:3] == ("valid", '["mailto:alice@example.com"]')


def test_unknown_kid_is_account_does_not_exist(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    acme.net.account = registration(acme).update(uri=f"{pki_server.base_url}/acme/intermediate/acct/nobody")
    before = table_counts(pki_server)
    assert_problem(post(acme, acme.directory["newOrder"],
                        {"identifiers": [{"type": "dns", "value": unique_name()}]}), 400, "accountDoesNotExist")
    assert table_counts(pki_server) == before


def test_deactivation(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    regr = registration(acme)
    orderr, _key = new_order(pki_server, acme, [unique_name()])
    authz_slug = orderr.authorizations[0].uri.rpartition("/")[2]

    deactivated = acme.deactivate_registration(regr)
    assert deactivated.body.status == "deactivated"
    assert account_row(pki_server, regr.uri)[1] == "deactivated"
    # §7.3.6: the account's pending authorizations end with it.
    assert pki_server.query("SELECT status FROM pki_acme_acmeauthorization WHERE slug = ?", authz_slug) == [
        ("deactivated",)]

    before = table_counts(pki_server)
    assert_problem(post(acme, regr.uri), 403, "unauthorized")
    assert_problem(post(acme, regr.uri, {"status": "valid"}), 403, "unauthorized")
    assert_problem(post(acme, regr.uri, {"contact": ["mailto:back@example.com"]}), 403, "unauthorized")
    assert_problem(post(acme, acme.directory["newOrder"],
                        {"identifiers": [{"type": "dns", "value": unique_name()}]}), 403, "unauthorized")
    assert_problem(post(acme, orderr.uri), 403, "unauthorized")
    assert_problem(post(acme, orderr.authorizations[0].uri), 403, "unauthorized")  # found with the account
    assert_problem(post(acme, acme.directory["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True),
                   403, "unauthorized")
    assert table_counts(pki_server) == before
    _id, status, contact, _thumbprint = account_row(pki_server, regr.uri)
    assert (status, json.loads(contact)) == ("deactivated", [])


# --- The orders list (RFC 8555 §7.1.2.1) -------------------------------------------------------------------

def orders_page(acme: client.ClientV2, url: str) -> tuple[list[str], str | None]:
    response = post(acme, url)
    assert response.status_code == 200, response.text
    following = [link["url"] for link in _links(response.headers.get("Link", "")) if link["rel"] == "next"]
    assert len(following) <= 1
    return response.json()["orders"], following[0] if following else None


def _links(header: str) -> list[dict[str, str]]:
    links = []
    for part in header.split(","):
        url, _, params = part.strip().partition(";")
        rel = params.strip().removeprefix("rel=").strip('"')
        links.append({"url": url.strip("<>"), "rel": rel})
    return links


def test_orders_list_is_paginated(pki_server: PkiServer) -> None:
    from pki_server.acme.handlers.account import ORDERS_PAGE_SIZE

    acme = register(pki_server)
    regr = registration(acme)
    orders_url = post(acme, regr.uri).json()["orders"]
    assert orders_url == f"{regr.uri}/orders"
    assert orders_page(acme, orders_url) == ([], None)

    name = unique_name()  # one name: its pending authorization is shared, so each order is one insert
    pki_server.dns.add_host(name)
    started = time.monotonic()
    created = []
    for _ in range(ORDERS_PAGE_SIZE + 1):
        response = post(acme, acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
        assert response.status_code == 201, response.text
        created.append(response.headers["Location"])
    assert time.monotonic() - started < 30
    assert order_count(pki_server, regr.uri) == ORDERS_PAGE_SIZE + 1

    first, following = orders_page(acme, orders_url)
    assert len(first) == ORDERS_PAGE_SIZE
    assert following is not None and following.startswith(f"{orders_url}?")
    assert first == created[::-1][:ORDERS_PAGE_SIZE]  # newest first
    second, last = orders_page(acme, following)
    assert second == [created[0]]
    assert last is None

    assert_problem(post(acme, f"{orders_url}?cursor=abc"), 400, "malformed")


def test_orders_list_leaves_out_invalid_orders(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    orders_url = f"{account_url(acme)}/orders"
    kept, _ = new_order(pki_server, acme, [unique_name()])
    dropped, _ = new_order(pki_server, acme, [unique_name()])
    acme.deactivate_authorization(dropped.authorizations[0])
    assert post(acme, dropped.uri).json()["status"] == "invalid"
    assert orders_page(acme, orders_url) == ([kept.uri], None)


# --- keyChange (RFC 8555 §7.3.5) ------------------------------------------------------------------------

def key_change_payload(acme: client.ClientV2, new_key: PrivateKey, *, old_jwk: dict[str, str] | None = None,
                       account: str | None = None) -> dict[str, str]:
    """The inner JWS: signed by the new key, over {account, oldKey}, with the outer url and no nonce."""
    url = acme.directory["keyChange"]
    protected = {"alg": algorithm(new_key), "jwk": public_jwk(new_key), "url": url}
    payload = {"account": account or account_url(acme), "oldKey": old_jwk or public_jwk(private_key_of(acme))}
    return sign_jws(new_key, protected, payload)


@pytest.mark.parametrize(("make_key", "old_key_problem"), [(ec_key, "malformed"), (rsa_key, "badSignatureAlgorithm")],
                         ids=["to-ES256", "to-RS256"])
def test_key_change(pki_server: PkiServer, make_key: object, old_key_problem: str) -> None:
    acme = register(pki_server)
    regr = registration(acme)
    old_key = private_key_of(acme)
    new_key = make_key()  # type: ignore[operator]
    response = post(acme, acme.directory["keyChange"], key_change_payload(acme, new_key))
    assert response.status_code == 200, response.text
    assert response.headers["Location"] == regr.uri
    assert account_row(pki_server, regr.uri)[3] == thumbprint(new_key)

    # The old key no longer finds or signs for the account.
    old = acme_client(pki_server, old_key)  # type: ignore[arg-type]
    before = table_counts(pki_server)
    assert_problem(post(old, old.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True),
                   400, "accountDoesNotExist")
    # The account's kid with the old key's signature: a bad signature (or one of the wrong algorithm).
    assert_problem(post(acme, regr.uri), 400, old_key_problem)
    assert table_counts(pki_server) == before

    # The new key does, with the same account URL.
    renewed = acme_client(pki_server, new_key)
    found = post(renewed, renewed.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert (found.status_code, found.headers["Location"]) == (200, regr.uri)
    renewed.net.account = regr
    orderr, _key = new_order(pki_server, renewed, [unique_name()])
    assert orderr.body.status == messages.STATUS_PENDING
    assert order_count(pki_server, regr.uri) == 1


def test_key_change_to_another_accounts_key_is_409(pki_server: PkiServer) -> None:
    alice, bob = register(pki_server), register(pki_server)
    alice_thumbprint = account_row(pki_server, account_url(alice))[3]
    response = post(alice, alice.directory["keyChange"], key_change_payload(alice, private_key_of(bob)))
    assert response.status_code == 409, response.text
    assert response.headers["Location"] == account_url(bob)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert account_row(pki_server, account_url(alice))[3] == alice_thumbprint


def test_key_change_with_wrong_inner_fields_is_refused(pki_server: PkiServer) -> None:
    alice, bob = register(pki_server), register(pki_server)
    alice_thumbprint = account_row(pki_server, account_url(alice))[3]
    new_key = ec_key()
    # oldKey is not the account's key.
    assert_problem(post(alice, alice.directory["keyChange"],
                        key_change_payload(alice, new_key, old_jwk=public_jwk(ec_key()))), 400, "malformed")
    # The inner account is another account.
    assert_problem(post(alice, alice.directory["keyChange"],
                        key_change_payload(alice, new_key, account=account_url(bob))), 400, "malformed")
    # The inner JWS is not signed by the key it carries.
    forged = key_change_payload(alice, new_key)
    forged["signature"] = b64(b"\0" * 64)
    assert_problem(post(alice, alice.directory["keyChange"], forged), 400, "malformed")
    # The inner JWS carries a nonce (§7.3.5: it MUST omit it), or names another url than the outer one.
    url = alice.directory["keyChange"]
    payload = {"account": account_url(alice), "oldKey": public_jwk(private_key_of(alice))}
    with_nonce = sign_jws(new_key, {"alg": "ES256", "jwk": public_jwk(new_key), "url": url, "nonce": "abc"}, payload)
    assert_problem(post(alice, url, with_nonce), 400, "malformed")
    elsewhere = sign_jws(new_key, {"alg": "ES256", "jwk": public_jwk(new_key), "url": alice.directory["newOrder"]},
                         payload)
    refused = post(alice, url, elsewhere)
    assert refused.status_code in (400, 403)
    assert refused.json()["type"] in (URN + "malformed", URN + "unauthorized")
    assert account_row(pki_server, account_url(alice))[3] == alice_thumbprint
