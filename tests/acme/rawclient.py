"""A raw ACME client for error-path tests: JWS built by hand (cryptography + josepy), sent with httpx.

Nothing of the server's own code is used to build requests: keys become JWKs through josepy, the
signature is computed here, and every header can be bent (wrong alg, both jwk and kid, a stale
nonce …) to see how the server answers. :class:`RawClient` keeps the last ``Replay-Nonce``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import josepy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from tests.acme.server import PkiServer

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
JOSE = "application/jose+json"
PROBLEM = "application/problem+json"
URN = "urn:ietf:params:acme:error:"
# The tables an ACME request can write to, besides the spent-nonce table.
TABLES = ("pki_acme_acmeaccount", "pki_acme_acmeorder", "pki_acme_acmeauthorization", "pki_acme_acmechallenge",
          "pki_core_certificate")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public JWK of a key, as josepy (an independent implementation) builds it; OKP by hand (RFC 8037)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return dict(josepy.JWKRSA(key=public).to_json())
    if isinstance(public, ec.EllipticCurvePublicKey):
        return dict(josepy.JWKEC(key=public).to_json())
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(public.public_bytes_raw())}


def thumbprint(key: PrivateKey) -> str:
    public = key.public_key()
    jwk_class = josepy.JWKRSA if isinstance(public, rsa.RSAPublicKey) else josepy.JWKEC
    return b64(jwk_class(key=public).thumbprint())


def default_alg(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    return "EdDSA"


def sign(key: PrivateKey, data: bytes, alg: str) -> bytes:
    """A JWS signature (RFC 7518 §3): PKCS#1 v1.5 for RS256, R || S for ES*, raw for EdDSA."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {"ES384": hashes.SHA384(), "ES512": hashes.SHA512()}.get(alg, hashes.SHA256())
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data)


@dataclass
class Snapshot:
    counts: dict[str, int]
    nonces: int


class RawClient:
    def __init__(self, server: PkiServer, key: PrivateKey | None = None, ca: str = "intermediate") -> None:
        self.server = server
        self.key: PrivateKey = key or ec.generate_private_key(ec.SECP256R1())
        self.prefix = f"{server.base_url}/acme/{ca}"
        self.http = httpx.Client(timeout=30)
        self.nonce: str | None = None
        self.kid: str | None = None

    def close(self) -> None:
        self.http.close()

    # --- URLs and nonces -----------------------------------------------------------------------

    def url(self, resource: str) -> str:
        return f"{self.prefix}/{resource}"

    def fresh_nonce(self) -> str:
        response = self.http.head(self.url("new-nonce"))
        assert response.status_code == 200, response.text
        return response.headers["Replay-Nonce"]

    def take_nonce(self) -> str:
        nonce, self.nonce = self.nonce, None
        return nonce or self.fresh_nonce()

    # --- JWS ---------------------------------------------------------------------------------

    def protected(self, url: str, *, use_jwk: bool | None = None, nonce: str | None = None,
                  alg: str | None = None, key: PrivateKey | None = None) -> dict[str, Any]:
        key = key or self.key
        header: dict[str, Any] = {"alg": alg or default_alg(key), "nonce": nonce or self.take_nonce(), "url": url}
        if use_jwk if use_jwk is not None else self.kid is None:
            header["jwk"] = public_jwk(key)
        else:
            header["kid"] = self.kid
        return header

    def jws(self, protected: dict[str, Any], payload: Any, *, key: PrivateKey | None = None) -> dict[str, str]:
        """A flattened JWS; ``payload`` None is POST-as-GET, bytes are sent as they are."""
        if payload is None:
            payload_b64 = ""
        elif isinstance(payload, bytes):
            payload_b64 = b64(payload)
        else:
            payload_b64 = b64(json.dumps(payload).encode("utf-8"))
        protected_b64 = b64(json.dumps(protected).encode("utf-8"))
        signature = sign(key or self.key, f"{protected_b64}.{payload_b64}".encode("ascii"), protected["alg"])
        return {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}

    def send(self, url: str, body: bytes | dict[str, Any], content_type: str = JOSE) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        response = self.http.post(url, content=content, headers={"Content-Type": content_type})
        if "Replay-Nonce" in response.headers:
            self.nonce = response.headers["Replay-Nonce"]
        return response

    def post(self, url: str, payload: Any, **protected: Any) -> httpx.Response:
        key = protected.get("key")
        return self.send(url, self.jws(self.protected(url, **protected), payload, key=key))

    # --- ACME flows ----------------------------------------------------------------------------

    def register(self) -> str:
        response = self.post(self.url("new-account"), {"termsOfServiceAgreed": True}, use_jwk=True)
        assert response.status_code == 201, response.text
        self.kid = response.headers["Location"]
        return self.kid

    def new_order(self, *names: str) -> tuple[str, dict[str, Any]]:
        identifiers = [{"type": "dns", "value": name} for name in names]
        response = self.post(self.url("new-order"), {"identifiers": identifiers})
        assert response.status_code == 201, response.text
        return response.headers["Location"], response.json()

    def authorize(self, order: dict[str, Any], timeout: float = 20) -> None:
        """Complete each pending authorization of an order with HTTP-01 against the test responder."""
        for authz_url in order["authorizations"]:
            authz = self.post(authz_url, None).json()
            if authz["status"] == "valid":
                continue
            self.server.dns.add_host(authz["identifier"]["value"])
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            self.server.http01.tokens[challenge["token"]] = f"{challenge['token']}.{thumbprint(self.key)}"
            response = self.post(challenge["url"], {})
            assert response.status_code == 200, response.text
            deadline = time.monotonic() + timeout
            while authz["status"] == "pending":
                assert time.monotonic() < deadline, f"authorization still pending: {authz}"
                time.sleep(0.1)
                authz = self.post(authz_url, None).json()
            assert authz["status"] == "valid", authz

    def ready_order(self, *names: str) -> tuple[str, dict[str, Any]]:
        """A new order for ``names`` (default: one unique name) taken to ``ready``."""
        names = names or (unique_name(),)
        url, order = self.new_order(*names)
        self.authorize(order)
        return url, self.wait_order(url, ("ready",))

    def wait_order(self, url: str, statuses: tuple[str, ...], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            order = self.post(url, None).json()
            if order["status"] in statuses or time.monotonic() > deadline:
                assert order["status"] in statuses, order
                return order
            time.sleep(0.1)

    def finalize(self, order: dict[str, Any], csr: x509.CertificateSigningRequest | bytes) -> httpx.Response:
        der = csr if isinstance(csr, bytes) else csr.public_bytes(Encoding.DER)
        return self.post(order["finalize"], {"csr": b64(der)})

    # --- what the server wrote -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot({table: self.server.count(table) for table in TABLES},
                        self.server.count("pki_acme_acmenonce"))

    def assert_nothing_written(self, before: Snapshot) -> None:
        after = self.snapshot()
        assert after.counts == before.counts
        assert before.nonces <= after.nonces <= before.nonces + 1  # at most the spent nonce


def unique_name() -> str:
    return f"{uuid.uuid4().hex[:16]}.test.internal"


def make_csr(names: list[str], key: PrivateKey | None = None,
             algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key, algorithm or hashes.SHA256())


def openssl_csr(tmp_path: Path, name: str, digest: str) -> bytes:
    """A CSR signed with a digest cryptography refuses to sign with (SHA-1, MD5)."""
    key_path, csr_path = tmp_path / "key.pem", tmp_path / "csr.der"
    key = rsa.generate_private_key(65537, 2048)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    result = subprocess.run(
        ["openssl", "req", "-new", "-key", str(key_path), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", f"-{digest}", "-outform", "DER", "-out", str(csr_path)],
        capture_output=True, text=True, timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl cannot make a {digest} CSR here: {result.stderr.strip()}")
    der = csr_path.read_bytes()
    assert x509.load_der_x509_csr(der).signature_hash_algorithm.name == digest  # type: ignore[union-attr]
    return der


def assert_problem(response: httpx.Response, status: int, *types: str) -> dict[str, Any]:
    """An RFC 8555 §6.7 problem of one of ``types``, with a detail and a fresh nonce."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM
    assert response.headers.get("Replay-Nonce")
    assert response.headers.get("Cache-Control") == "no-store"
    assert 'rel="index"' in response.headers.get("Link", "")
    problem = response.json()
    assert problem["type"] in [URN + t for t in types], problem
    assert isinstance(problem.get("detail"), str) and problem["detail"].strip(), problem
    assert problem.get("status", status) == status, problem  # RFC 7807 §3.2: the same as the HTTP status
    return problem
