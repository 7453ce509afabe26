"""Helpers of the end-to-end ACME flow tests (test_accounts, test_orders, test_revocation).

The flows are driven by the `acme` library's ClientV2, as certbot drives a server. Where ClientV2 hides
what a test must see — the HTTP status of an error, an EdDSA account key (josepy has no OKP keys), the
inner JWS of a keyChange — requests are signed here with `cryptography` and sent as they are.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import josepy
import requests
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.acme.server import PkiServer

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
JOSE = "application/jose+json"
PROBLEM = "application/problem+json"
URN = "urn:ietf:params:acme:error:"
DEADLINE = 30.0  # seconds a validation or an issuance may take before a test gives up


def unique_name(label: str = "host") -> str:
    """A DNS name no other test uses (the server is shared by the whole session)."""
    return f"{label}-{uuid.uuid4().hex[:12]}.test.internal"


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- JWS by hand (RFC 7515, RFC 7518, RFC 8037) ---------------------------------------------------

def public_jwk(key: PrivateKey) -> dict[str, str]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        n, e = public.public_numbers().n, public.public_numbers().e
        return {"kty": "RSA", "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
                "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big"))}
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64(point.x.to_bytes(32, "big")),
                "y": b64(point.y.to_bytes(32, "big"))}
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


def thumbprint(key: PrivateKey) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without white space."""
    jwk = public_jwk(key)
    return b64(hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest())


def algorithm(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"


def sign_jws(key: PrivateKey, protected: dict[str, Any], payload: dict[str, Any] | None) -> dict[str, str]:
    """A flattened JWS; ``payload`` None is the empty payload of a POST-as-GET."""
    protected_b64 = b64(json.dumps(protected).encode())
    payload_b64 = "" if payload is None else b64(json.dumps(payload).encode())
    data = f"{protected_b64}.{payload_b64}".encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(data)
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}


class RawClient:
    """Signs and sends requests itself: for EdDSA keys and for looking at every status and header."""

    def __init__(self, server: PkiServer, key: PrivateKey, directory_url: str | None = None) -> None:
        self.http = httpx.Client(timeout=15)
        self.directory = self.http.get(directory_url or server.directory_url).json()
        self.key = key
        self.kid: str | None = None

    def nonce(self) -> str:
        return self.http.head(self.directory["newNonce"]).headers["Replay-Nonce"]

    def post(self, url: str, payload: dict[str, Any] | None = None, *, use_jwk: bool = False) -> httpx.Response:
        protected: dict[str, Any] = {"alg": algorithm(self.key), "nonce": self.nonce(), "url": url}
        if use_jwk or self.kid is None:
            protected["jwk"] = public_jwk(self.key)
        else:
            protected["kid"] = self.kid
        body = json.dumps(sign_jws(self.key, protected, payload))
        response = self.http.post(url, content=body, headers={"Content-Type": JOSE})
        assert_index_link(response)
        return response

    def new_account(self, **payload: Any) -> httpx.Response:
        response = self.post(self.directory["newAccount"], {"termsOfServiceAgreed": True, **payload}, use_jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response


# --- ClientV2 ---------------------------------------------------------------------------------------

def acme_client(server: PkiServer, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
                directory_url: str | None = None) -> client.ClientV2:
    """A ClientV2 without an account yet, for an RSA (RS256) or P-256 (ES256) key."""
    key = key if key is not None else ec_key()
    if isinstance(key, rsa.RSAPrivateKey):
        net = client.ClientNetwork(josepy.JWKRSA(key=key), alg=josepy.RS256, user_agent="pki-server-tests")
    else:
        net = client.ClientNetwork(josepy.JWKEC(key=key), alg=josepy.ES256, user_agent="pki-server-tests")
    directory = client.ClientV2.get_directory(directory_url or server.directory_url, net)
    return client.ClientV2(directory, net)


def register(server: PkiServer, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
             contact: tuple[str, ...] = ()) -> client.ClientV2:
    """A ClientV2 with a new account (its regr is ``acme.net.account``)."""
    acme = acme_client(server, key)
    acme.new_account(messages.NewRegistration(contact=contact, terms_of_service_agreed=True))
    return acme


def private_key_of(acme: client.ClientV2) -> PrivateKey:
    """The cryptography key inside the client's josepy JWK."""
    assert acme.net.key is not None
    key = acme.net.key.key
    return getattr(key, "_wrapped", key)


def regr(acme: client.ClientV2) -> messages.RegistrationResource:
    """The client's account (after ``register``)."""
    assert acme.net.account is not None
    return acme.net.account


def account_url(acme: client.ClientV2) -> str:
    return str(regr(acme).uri)


@dataclass
class _Payload:
    """Any JSON object, in the shape ClientNetwork signs (it calls ``json_dumps``)."""

    data: dict[str, Any]

    def json_dumps(self, **kwargs: Any) -> str:
        return json.dumps(self.data, **kwargs)


def post(acme: client.ClientV2, url: str, payload: dict[str, Any] | None = None, *,
         use_jwk: bool = False) -> requests.Response:
    """A request signed by the client's key (kid, or jwk) whose response is returned whatever its status.

    ``payload`` None is a POST-as-GET. The client's nonce pool is kept, as ClientNetwork.post does.
    """
    net = acme.net
    account = net.account
    if use_jwk:
        net.account = None
    try:
        nonce = net._get_nonce(url, acme.directory["newNonce"])
        data = net._wrap_in_jws(_Payload(payload) if payload is not None else None,  # type: ignore[arg-type]
                                nonce, url)
    finally:
        net.account = account
    response = net._send_request("POST", url, data=data, headers={"Content-Type": JOSE})
    net._add_nonce(response)
    assert_index_link(response)
    return response


def assert_index_link(response: requests.Response | httpx.Response) -> None:
    """Every ACME response links the directory (RFC 8555 §7.1) and carries a fresh nonce (§6.5)."""
    assert '/directory>;rel="index"' in response.headers.get("Link", ""), response.headers
    assert response.headers.get("Replay-Nonce"), response.headers


def assert_problem(response: requests.Response | httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The response is a problem document of ``urn:ietf:params:acme:error:<kind>`` with ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].split(";")[0] == PROBLEM, response.headers
    document = response.json()
    assert document["type"] == URN + kind, document
    assert document["status"] == status, document
    assert document["detail"], document
    assert_index_link(response)
    return document


# --- Orders -----------------------------------------------------------------------------------------

def make_csr_pem(names: list[str],
                 key: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key if key is not None else ec_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return crypto_util.make_csr(pem, names), key


def http01(authzr: messages.AuthorizationResource) -> messages.ChallengeBody:
    return next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01))


def answer_http01(server: PkiServer, acme: client.ClientV2, authzr: messages.AuthorizationResource,
                  content: str | None = None) -> messages.ChallengeBody:
    """Publish the key authorization (or ``content``) on the HTTP-01 responder and tell the server."""
    challb = http01(authzr)
    response, validation = challb.response_and_validation(acme.net.key)
    server.http01.tokens[challb.chall.encode("token")] = validation if content is None else content
    acme.answer_challenge(challb, response)
    return challb


def wait_for(fetch: Any, until: Any, what: str) -> Any:
    """Poll ``fetch()`` (quickly: the server validates and issues in milliseconds) until ``until(result)``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = fetch()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {result!r} after {DEADLINE} s")
        time.sleep(0.05)


def order_json(acme: client.ClientV2, url: str) -> dict[str, Any]:
    response = post(acme, url)
    assert response.status_code == 200, response.text
    return response.json()


def wait_order(acme: client.ClientV2, url: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    return wait_for(lambda: order_json(acme, url), lambda o: o["status"] in statuses, f"order {url}")


def new_order(server: PkiServer, acme: client.ClientV2, names: list[str]) -> tuple[messages.OrderResource,
                                                                                   ec.EllipticCurvePrivateKey]:
    for name in names:
        server.dns.add_host(name)
    csr_pem, key = make_csr_pem(names)
    return acme.new_order(csr_pem), key


def authorize(server: PkiServer, acme: client.ClientV2, orderr: messages.OrderResource) -> dict[str, Any]:
    """Answer HTTP-01 for every pending authorization; returns the order once ready."""
    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_PENDING:
            answer_http01(server, acme, authzr)
    return wait_order(acme, orderr.uri, ("ready", "invalid"))


def finalize(acme: client.ClientV2, orderr: messages.OrderResource) -> tuple[dict[str, Any], requests.Response]:
    """Finalize a ready order, wait until it is valid; returns the order and the certificate response."""
    wrapped = messages.CertificateRequest(csr=x509.load_pem_x509_csr(orderr.csr_pem))
    response = post(acme, orderr.body.finalize, wrapped.to_partial_json())
    assert response.status_code == 200, response.text
    order = wait_order(acme, orderr.uri, ("valid", "invalid"))
    assert order["status"] == "valid", order
    certificate = post(acme, order["certificate"])
    assert certificate.status_code == 200, certificate.text
    return order, certificate


def obtain(server: PkiServer, acme: client.ClientV2, names: list[str]) -> tuple[
        messages.OrderResource, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``names``: order, HTTP-01 for each name, finalize, download."""
    orderr, key = new_order(server, acme, names)
    assert authorize(server, acme, orderr)["status"] == "ready"
    _order, response = finalize(acme, orderr)
    return orderr, x509.load_pem_x509_certificates(response.content)[0], key


def deadline(seconds: float = DEADLINE) -> datetime.datetime:
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


# --- The server's side ------------------------------------------------------------------------------

def account_row(server: PkiServer, url: str) -> tuple[Any, ...]:
    """(id, status, contact, thumbprint) of the account at ``url``."""
    rows = server.query("SELECT id, status, contact, thumbprint FROM pki_acme_acmeaccount WHERE slug = ?",
                        url.rpartition("/")[2])
    assert len(rows) == 1, rows
    return rows[0]


def order_count(server: PkiServer, account_url: str) -> int:
    account_id = account_row(server, account_url)[0]
    return int(server.query("SELECT COUNT(*) FROM pki_acme_acmeorder WHERE account_id = ?", account_id)[0][0])


def table_counts(server: PkiServer) -> dict[str, int]:
    """Row counts of every ACME and certificate table: 'nothing was written' compares two of these."""
    tables = ("pki_acme_acmeaccount", "pki_acme_acmeorder", "pki_acme_acmeauthorization",
              "pki_acme_acmechallenge", "pki_core_certificate")
    return {table: server.count(table) for table in tables}


@contextlib.contextmanager
def no_new_tracebacks(server: PkiServer) -> Iterator[None]:
    """The server logs no traceback while the block runs."""
    start = server.log_path.stat().st_size
    yield
    with server.log_path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-5000:]
