"""The JWS and request rules of RFC 8555 §6 against the real server, with requests built by hand.

Each refusal is checked the same way: the status, an ``application/problem+json`` body with the
RFC's error type and a detail, a fresh ``Replay-Nonce`` that the next request can use (§6.5), and
that nothing was written — the only row a refused request may add is its spent nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.acme.rawclient import JOSE, RawClient, Snapshot, assert_problem, b64, make_csr, public_jwk, unique_name
from tests.acme.server import PkiServer

ALGORITHMS = {"RS256", "ES256", "ES384", "ES512", "EdDSA"}


@pytest.fixture
def client(pki_server: PkiServer) -> Iterator[RawClient]:
    """A client with a registered account (ES256)."""
    raw = RawClient(pki_server)
    raw.register()
    yield raw
    raw.close()


@pytest.fixture
def anonymous(pki_server: PkiServer) -> Iterator[RawClient]:
    """A client with a key but no account."""
    raw = RawClient(pki_server)
    yield raw
    raw.close()


def refused(client: RawClient, before: Snapshot, response: httpx.Response, status: int, *types: str) -> dict:
    """Check a refusal, that nothing was written, and that the nonce it carries is good for the next request."""
    problem = assert_problem(response, status, *types)
    client.assert_nothing_written(before)
    probe = RawClient(client.server)
    try:
        probe.nonce = response.headers["Replay-Nonce"]
        # A newAccount lookup for an unknown key writes nothing; a bad nonce would be badNonce.
        answer = probe.post(probe.url("new-account"), {"onlyReturnExisting": True}, use_jwk=True)
        assert_problem(answer, 400, "accountDoesNotExist")
    finally:
        probe.close()
    return problem


def order_payload() -> dict:
    return {"identifiers": [{"type": "dns", "value": unique_name()}]}


# --- the happy path the refusals are measured against --------------------------------------------------------------

def test_a_well_formed_request_succeeds(client: RawClient) -> None:
    response = client.post(client.url("new-order"), order_payload())
    assert response.status_code == 201, response.text
    assert response.headers["Replay-Nonce"]
    assert response.json()["status"] == "pending"


# --- signatures ------------------------------------------------------------------------------------------------------

def test_bad_signature_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    body = client.jws(client.protected(client.url("new-order")), order_payload())
    signature = bytearray(base64.urlsafe_b64decode(body["signature"] + "=="))
    signature[5] ^= 0x01
    body["signature"] = b64(bytes(signature))
    problem = refused(client, before, client.send(client.url("new-order"), body), 400, "malformed")
    assert "signature" in problem["detail"]


def test_signature_by_another_key_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    other = ec.generate_private_key(ec.SECP256R1())
    body = client.jws(client.protected(client.url("new-order")), order_payload(), key=other)
    refused(client, before, client.send(client.url("new-order"), body), 400, "malformed")


# --- nonces (§6.5) ---------------------------------------------------------------------------------------------------

def test_reused_nonce_is_bad_nonce_and_the_retry_with_the_fresh_nonce_succeeds(client: RawClient) -> None:
    nonce = client.fresh_nonce()
    first = client.post(client.url("new-order"), order_payload(), nonce=nonce)
    assert first.status_code == 201, first.text
    before = client.snapshot()
    replay = client.post(client.url("new-order"), order_payload(), nonce=nonce)
    problem = assert_problem(replay, 400, "badNonce")
    assert "used" in problem["detail"]
    client.assert_nothing_written(before)
    assert client.snapshot().nonces == before.nonces  # the replayed nonce was spent already
    # §6.5: the error carries a fresh nonce, and the client retries with it.
    assert client.nonce == replay.headers["Replay-Nonce"] != nonce
    retry = client.post(client.url("new-order"), order_payload())
    assert retry.status_code == 201, retry.text


def _tampered(nonce: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    raw[-1] ^= 0x01  # the last byte of the MAC
    return b64(bytes(raw))


def test_nonce_with_a_bad_mac_is_bad_nonce(client: RawClient) -> None:
    before = client.snapshot()
    response = client.post(client.url("new-order"), order_payload(), nonce=_tampered(client.fresh_nonce()))
    assert client.snapshot().nonces == before.nonces  # a forged nonce is not stored
    refused(client, before, response, 400, "badNonce")


def test_nonce_with_a_forged_timestamp_is_bad_nonce(client: RawClient) -> None:
    """Backdating (or postdating) a real nonce breaks its MAC: only the server can mint nonces."""
    raw = bytearray(base64.urlsafe_b64decode(client.fresh_nonce() + "=="))
    raw[7] ^= 0x40  # the issued-at seconds
    before = client.snapshot()
    response = client.post(client.url("new-order"), order_payload(), nonce=b64(bytes(raw)))
    refused(client, before, response, 400, "badNonce")


@pytest.mark.parametrize("nonce", [b64(b"\0" * 32), b64(b"random but well encoded"), "AAAA"])
def test_nonce_the_server_did_not_issue_is_bad_nonce(client: RawClient, nonce: str) -> None:
    before = client.snapshot()
    refused(client, before, client.post(client.url("new-order"), order_payload(), nonce=nonce), 400, "badNonce")


@pytest.mark.parametrize("nonce", ["not a nonce!", "abc=", "ab+/cd"])
def test_nonce_that_is_not_base64url_is_malformed(client: RawClient, nonce: str) -> None:
    """§6.5.2: a nonce value that is not base64url is rejected as malformed."""
    before = client.snapshot()
    refused(client, before, client.post(client.url("new-order"), order_payload(), nonce=nonce), 400, "malformed")


def test_missing_nonce_is_bad_nonce(client: RawClient) -> None:
    before = client.snapshot()
    protected = client.protected(client.url("new-order"))
    del protected["nonce"]
    response = client.send(client.url("new-order"), client.jws(protected, order_payload()))
    refused(client, before, response, 400, "badNonce")


def test_a_nonce_is_spent_even_by_a_refused_request(client: RawClient) -> None:
    """A nonce spent on a request that failed its signature check cannot be replayed either."""
    nonce = client.fresh_nonce()
    body = client.jws(client.protected(client.url("new-order"), nonce=nonce), order_payload(),
                      key=ec.generate_private_key(ec.SECP256R1()))
    assert_problem(client.send(client.url("new-order"), body), 400, "malformed")
    assert_problem(client.post(client.url("new-order"), order_payload(), nonce=nonce), 400, "badNonce")


# --- url (§6.4) ------------------------------------------------------------------------------------------------------

def test_signed_url_other_than_the_request_url_is_unauthorized(client: RawClient) -> None:
    before = client.snapshot()
    body = client.jws(client.protected(client.url("new-account")), order_payload())
    problem = refused(client, before, client.send(client.url("new-order"), body), 403, "unauthorized")
    assert client.url("new-account") in problem["detail"]


def test_signed_url_with_another_host_is_unauthorized(client: RawClient) -> None:
    before = client.snapshot()
    signed = client.url("new-order").replace("127.0.0.1", "localhost")
    body = client.jws(client.protected(signed), order_payload())
    refused(client, before, client.send(client.url("new-order"), body), 403, "unauthorized")


def test_missing_url_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    protected = client.protected(client.url("new-order"))
    del protected["url"]
    refused(client, before, client.send(client.url("new-order"), client.jws(protected, order_payload())), 400,
            "malformed")


# --- jwk and kid (§6.2) ----------------------------------------------------------------------------------------------

def test_unknown_kid_is_account_does_not_exist(client: RawClient) -> None:
    before = client.snapshot()
    client.kid = client.url("acct/doesnotexist")
    refused(client, before, client.post(client.url("new-order"), order_payload()), 400, "accountDoesNotExist")


def test_kid_that_is_not_an_account_url_is_account_does_not_exist(client: RawClient) -> None:
    before = client.snapshot()
    client.kid = "https://elsewhere.example/acme/acct/1"
    refused(client, before, client.post(client.url("new-order"), order_payload()), 400, "accountDoesNotExist")


def test_jwk_on_a_kid_resource_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    response = client.post(client.url("new-order"), order_payload(), use_jwk=True)
    refused(client, before, response, 400, "malformed")


def test_kid_on_new_account_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    response = client.post(client.url("new-account"), {"termsOfServiceAgreed": True}, use_jwk=False)
    refused(client, before, response, 400, "malformed")


def test_both_jwk_and_kid_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    protected = client.protected(client.url("new-order"))
    protected["jwk"] = public_jwk(client.key)
    problem = refused(client, before, client.send(client.url("new-order"), client.jws(protected, order_payload())),
                      400, "malformed")
    assert "jwk" in problem["detail"] and "kid" in problem["detail"]


def test_neither_jwk_nor_kid_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    protected = client.protected(client.url("new-order"))
    del protected["kid"]
    refused(client, before, client.send(client.url("new-order"), client.jws(protected, order_payload())), 400,
            "malformed")


# --- algorithms (§6.2, RFC 7518) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "HS256", "RS1", "PS256", "ES256K", None])
def test_disallowed_algorithm_is_bad_signature_algorithm(client: RawClient, alg: str | None) -> None:
    before = client.snapshot()
    protected = client.protected(client.url("new-order"))
    if alg is None:
        del protected["alg"]
    else:
        protected["alg"] = alg
    protected_b64 = b64(json.dumps(protected).encode())
    payload_b64 = b64(json.dumps(order_payload()).encode())
    signing_input = f"{protected_b64}.{payload_b64}".encode()
    if alg == "none":
        signature = b""
    elif alg == "HS256":  # an HMAC keyed with something the attacker knows: the public key itself
        signature = hmac.new(json.dumps(public_jwk(client.key)).encode(), signing_input, hashlib.sha256).digest()
    else:
        signature = b"\1" * 64
    body = {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}
    problem = refused(client, before, client.send(client.url("new-order"), body), 400, "badSignatureAlgorithm")
    assert set(problem["algorithms"]) == ALGORITHMS  # §6.2: the problem lists the accepted algorithms


def test_es256_header_with_an_rsa_key(anonymous: RawClient) -> None:
    anonymous.key = rsa.generate_private_key(65537, 2048)
    before = anonymous.snapshot()
    response = anonymous.post(anonymous.url("new-account"), {"termsOfServiceAgreed": True}, alg="ES256")
    problem = refused(anonymous, before, response, 400, "badSignatureAlgorithm", "malformed")
    if problem["type"].endswith("badSignatureAlgorithm"):
        assert set(problem["algorithms"]) == ALGORITHMS


def test_rs256_header_with_an_ec_key(anonymous: RawClient) -> None:
    before = anonymous.snapshot()
    response = anonymous.post(anonymous.url("new-account"), {"termsOfServiceAgreed": True}, alg="RS256")
    refused(anonymous, before, response, 400, "badSignatureAlgorithm", "malformed")


def test_es384_header_with_a_p256_key(anonymous: RawClient) -> None:
    before = anonymous.snapshot()
    response = anonymous.post(anonymous.url("new-account"), {"termsOfServiceAgreed": True}, alg="ES384")
    refused(anonymous, before, response, 400, "badSignatureAlgorithm", "malformed")


@pytest.mark.parametrize("make_key", [
    lambda: rsa.generate_private_key(65537, 2048),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: ec.generate_private_key(ec.SECP521R1()),
], ids=["RS256", "ES384", "ES512"])
def test_every_allowed_algorithm_registers(anonymous: RawClient, make_key) -> None:  # type: ignore[no-untyped-def]
    anonymous.key = make_key()
    kid = anonymous.register()
    response = anonymous.post(kid, None)
    assert response.status_code == 200, response.text


def test_eddsa_registers(anonymous: RawClient) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    anonymous.key = ed25519.Ed25519PrivateKey.generate()
    kid = anonymous.register()
    assert anonymous.post(kid, None).status_code == 200


# --- serialization and HTTP (§6.2) -----------------------------------------------------------------------------------

def test_general_json_serialization_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    flat = client.jws(client.protected(client.url("new-order")), order_payload())
    general = {"payload": flat["payload"], "signatures": [{"protected": flat["protected"],
                                                           "signature": flat["signature"]}]}
    refused(client, before, client.send(client.url("new-order"), general), 400, "malformed")


def test_compact_serialization_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    flat = client.jws(client.protected(client.url("new-order")), order_payload())
    compact = f"{flat['protected']}.{flat['payload']}.{flat['signature']}".encode()
    refused(client, before, client.send(client.url("new-order"), compact), 400, "malformed")


def test_unprotected_header_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    body: dict[str, Any] = client.jws(client.protected(client.url("new-order")), order_payload())
    body["header"] = {"kid": client.kid}
    refused(client, before, client.send(client.url("new-order"), body), 400, "malformed")


def test_content_type_application_json_is_415(client: RawClient) -> None:
    before = client.snapshot()
    body = client.jws(client.protected(client.url("new-order")), order_payload())
    response = client.send(client.url("new-order"), body, content_type="application/json")
    problem = refused(client, before, response, 415, "malformed")
    assert JOSE in problem["detail"]


def test_content_type_with_parameters_is_accepted(client: RawClient) -> None:
    body = client.jws(client.protected(client.url("new-order")), order_payload())
    response = client.send(client.url("new-order"), body, content_type="application/jose+json; charset=utf-8")
    assert response.status_code == 201, response.text


def test_body_over_64_kib_is_413(client: RawClient) -> None:
    before = client.snapshot()
    payload = {**order_payload(), "padding": "x" * (64 * 1024)}
    body = client.jws(client.protected(client.url("new-order")), payload)
    refused(client, before, client.send(client.url("new-order"), body), 413, "malformed")


def test_chunked_body_over_64_kib_is_413(client: RawClient) -> None:
    """Without a Content-Length the cap applies while reading."""
    before = client.snapshot()
    payload = {**order_payload(), "padding": "x" * (64 * 1024)}
    content = json.dumps(client.jws(client.protected(client.url("new-order")), payload)).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 8192):
            yield content[start:start + 8192]

    response = client.http.post(client.url("new-order"), content=chunks(), headers={"Content-Type": JOSE})
    assert "Content-Length" not in response.request.headers
    refused(client, before, response, 413, "malformed")


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"protected": 1, "payload": "",'
                                                                            b' "signature": ""}'])
def test_body_that_is_not_a_flattened_jws_is_malformed(client: RawClient, body: bytes) -> None:
    before = client.snapshot()
    refused(client, before, client.send(client.url("new-order"), body), 400, "malformed")


def test_protected_header_that_is_not_json_is_malformed(client: RawClient) -> None:
    before = client.snapshot()
    body = client.jws(client.protected(client.url("new-order")), order_payload())
    body["protected"] = b64(b"{not json")
    refused(client, before, client.send(client.url("new-order"), body), 400, "malformed")


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"a string"', b"\xff"])
def test_payload_that_is_not_a_json_object_is_malformed(client: RawClient, payload: bytes) -> None:
    before = client.snapshot()
    refused(client, before, client.post(client.url("new-order"), payload), 400, "malformed")


def test_new_account_payload_that_is_not_json_is_malformed(anonymous: RawClient) -> None:
    before = anonymous.snapshot()
    response = anonymous.post(anonymous.url("new-account"), b"{termsOfServiceAgreed: true}")
    refused(anonymous, before, response, 400, "malformed")


@pytest.mark.parametrize("resource", ["new-account", "new-order", "revoke-cert", "key-change"])
def test_get_on_a_post_only_resource_is_405_with_allow(client: RawClient, resource: str) -> None:
    before = client.snapshot()
    response = client.http.get(client.url(resource))
    problem = refused(client, before, response, 405, "malformed")
    assert response.headers["Allow"] == "POST"
    assert "GET" in problem["detail"]


def test_post_to_the_directory_is_405(client: RawClient) -> None:
    response = client.post(client.url("directory"), None)
    assert_problem(response, 405, "malformed")
    assert "GET" in response.headers["Allow"]


# --- payload fields (§7.3) -------------------------------------------------------------------------------------------

def test_unknown_payload_fields_are_ignored(anonymous: RawClient) -> None:
    """Old clients still send ACME draft's "resource" field."""
    response = anonymous.post(anonymous.url("new-account"), {
        "resource": "new-reg", "termsOfServiceAgreed": True, "somethingElse": {"nested": [1]},
    }, use_jwk=True)
    assert response.status_code == 201, response.text
    anonymous.kid = response.headers["Location"]
    order = anonymous.post(anonymous.url("new-order"), {"resource": "new-order", **order_payload()})
    assert order.status_code == 201, order.text


# --- account keys (§6.2, §7.3) ---------------------------------------------------------------------------------------

def test_rsa_account_key_of_1024_bits_is_bad_public_key(anonymous: RawClient) -> None:
    anonymous.key = rsa.generate_private_key(65537, 1024)
    before = anonymous.snapshot()
    response = anonymous.post(anonymous.url("new-account"), {"termsOfServiceAgreed": True})
    problem = refused(anonymous, before, response, 400, "badPublicKey")
    assert "1024" in problem["detail"]


def test_jwk_with_a_private_key_is_bad_public_key(anonymous: RawClient) -> None:
    assert isinstance(anonymous.key, ec.EllipticCurvePrivateKey)
    protected = anonymous.protected(anonymous.url("new-account"))
    protected["jwk"]["d"] = b64(anonymous.key.private_numbers().private_value.to_bytes(32, "big"))
    before = anonymous.snapshot()
    response = anonymous.send(anonymous.url("new-account"), anonymous.jws(protected, {"termsOfServiceAgreed": True}))
    problem = refused(anonymous, before, response, 400, "badPublicKey")
    assert "private" in problem["detail"]


@pytest.mark.parametrize("jwk", [
    {"kty": "oct", "k": "c2VjcmV0"},
    {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
    {"kty": "EC", "crv": "secp256k1", "x": b64(b"\1" * 32), "y": b64(b"\2" * 32)},
    {"kty": "RSA", "n": "not base64!"},
])
def test_unusable_jwk_is_refused(anonymous: RawClient, jwk: dict) -> None:
    protected = anonymous.protected(anonymous.url("new-account"))
    protected["jwk"] = jwk
    before = anonymous.snapshot()
    response = anonymous.send(anonymous.url("new-account"), anonymous.jws(protected, {"termsOfServiceAgreed": True}))
    refused(anonymous, before, response, 400, "badPublicKey", "malformed")


# --- a resource found together with its account (AcmeHandler.owned_lookup) -----------------------------------------

@pytest.fixture(scope="module")
def owned(pki_server: PkiServer) -> Iterator[tuple[RawClient, dict[str, str]]]:
    """An account with a valid order: the URL of each resource it owns, which its requests find with it."""
    raw = RawClient(pki_server)
    raw.register()
    order_url, order = raw.ready_order(unique_name())
    response = raw.finalize(order, make_csr([identifier["value"] for identifier in order["identifiers"]]))
    assert response.json()["status"] == "valid", response.text
    authz_url = order["authorizations"][0]
    challenge_url = raw.post(authz_url, None).json()["challenges"][0]["url"]
    yield raw, {"order": order_url, "authorization": authz_url, "challenge": challenge_url,
                "finalize": order["finalize"], "certificate": response.json()["certificate"]}
    raw.close()


RESOURCES = ["order", "authorization", "challenge", "finalize", "certificate"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_an_owned_resource_is_read_by_its_account(owned: tuple[RawClient, dict[str, str]], resource: str) -> None:
    client, urls = owned
    response = client.post(urls[resource], None)
    expected = 400 if resource == "finalize" else 200  # finalize needs its CSR (found and authorized first)
    assert response.status_code == expected, response.text


@pytest.mark.parametrize("resource", RESOURCES)
def test_an_owned_resource_still_needs_its_account_key(owned: tuple[RawClient, dict[str, str]], resource: str) -> None:
    """Found with the resource, the account's key still checks the signature."""
    client, urls = owned
    before = client.snapshot()
    other = ec.generate_private_key(ec.SECP256R1())
    body = client.jws(client.protected(urls[resource]), None, key=other)
    problem = refused(client, before, client.send(urls[resource], body), 400, "malformed")
    client.nonce = None  # refused() spent the response's nonce
    assert "signature" in problem["detail"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_another_accounts_resource_is_unauthorized(owned: tuple[RawClient, dict[str, str]], pki_server: PkiServer,
                                                   resource: str) -> None:
    _client, urls = owned
    stranger = RawClient(pki_server)
    try:
        stranger.register()
        before = stranger.snapshot()
        refused(stranger, before, stranger.post(urls[resource], None), 403, "unauthorized")
    finally:
        stranger.close()
