"""Every JWS rule of ACME in one place (RFC 8555 §6.2-6.5, RFC 7515, RFC 7518, RFC 7638, RFC 8037).

:func:`parse` checks the shape of a request body and its protected header without touching the
database; :func:`verify` checks the signature with a key from :func:`public_key` (parsed once per
distinct JWK and cached).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pki_server.acme import problems

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

# RFC 8555 §6.2: the server MUST NOT accept "none" or MAC-based algorithms (outside EAB).
ALGORITHMS = ("RS256", "ES256", "ES384", "ES512", "EdDSA")
_EC_ALGORITHMS = {"ES256": ("P-256", hashes.SHA256, 32), "ES384": ("P-384", hashes.SHA384, 48),
                  "ES512": ("P-521", hashes.SHA512, 66)}
_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192


def b64decode(value: Any, what: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2); anything else is malformed."""
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise problems.malformed(f"{what} is not unpadded base64url.")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise problems.malformed(f"{what} is not unpadded base64url.") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class JWS:
    protected: dict[str, Any]
    protected_b64: str
    payload_b64: str
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return self.protected["alg"]

    @property
    def nonce(self) -> str:
        return self.protected["nonce"]

    @property
    def url(self) -> str:
        return self.protected["url"]

    @property
    def jwk(self) -> dict[str, Any] | None:
        return self.protected.get("jwk")

    @property
    def kid(self) -> str | None:
        return self.protected.get("kid")

    @property
    def is_post_as_get(self) -> bool:
        return self.payload_b64 == ""

    def json_payload(self) -> dict[str, Any]:
        """The payload as a JSON object (RFC 8555 §7: unknown fields are ignored by callers)."""
        if self.is_post_as_get:
            raise problems.malformed("This resource needs a JSON payload; the request is a POST-as-GET.")
        try:
            payload = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            raise problems.malformed("The JWS payload is not JSON.") from None
        if not isinstance(payload, dict):
            raise problems.malformed("The JWS payload must be a JSON object.")
        return payload

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")


def parse(body: bytes, *, url: str, inner: bool = False) -> JWS:
    """Parse a flattened JWS and check its protected header; the signature is checked by :func:`verify`.

    ``url`` is the URL the request was sent to, which the signed ``url`` must equal (§6.4).
    ``inner`` is for the inner JWS of a key change (§7.3.5): a jwk, and no nonce.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise problems.malformed("The request body is not JSON: ACME requests are flattened JWS objects.") from None
    if not isinstance(document, dict):
        raise problems.malformed("The request body must be a flattened JWS object.")
    if "signatures" in document:
        raise problems.malformed("Use the flattened JWS JSON serialization, not the general one (RFC 8555 §6.2).")
    if "header" in document:
        raise problems.malformed("The JWS must not have an unprotected header (RFC 8555 §6.2).")
    missing = [field for field in ("protected", "payload", "signature") if field not in document]
    if missing:
        raise problems.malformed(f"The JWS lacks {', '.join(missing)}.")
    protected_b64, payload_b64 = document["protected"], document["payload"]
    protected_bytes = b64decode(protected_b64, "The protected header")
    payload = b64decode(payload_b64, "The payload")
    signature = b64decode(document["signature"], "The signature")
    try:
        protected = json.loads(protected_bytes)
    except (ValueError, UnicodeDecodeError):
        raise problems.malformed("The protected header is not JSON.") from None
    if not isinstance(protected, dict):
        raise problems.malformed("The protected header must be a JSON object.")

    alg = protected.get("alg")
    if alg not in ALGORITHMS:
        raise problems.bad_signature_algorithm(
            f"The JWS algorithm {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}.", list(ALGORITHMS)
        )
    if ("jwk" in protected) == ("kid" in protected):
        raise problems.malformed("The protected header must have exactly one of jwk and kid (RFC 8555 §6.2).")
    if "jwk" in protected and not isinstance(protected["jwk"], dict):
        raise problems.malformed("The jwk in the protected header must be a JSON object.")
    if "kid" in protected and not isinstance(protected["kid"], str):
        raise problems.malformed("The kid in the protected header must be an account URL.")
    if "b64" in protected or "crit" in protected:
        raise problems.malformed("The protected header must not use b64 or crit.")
    nonce = protected.get("nonce")
    if inner:
        if "nonce" in protected:
            raise problems.malformed("The inner JWS of a key change must not have a nonce (RFC 8555 §7.3.5).")
        if "jwk" not in protected:
            raise problems.malformed("The inner JWS of a key change must carry the new key as jwk.")
    elif not isinstance(nonce, str) or not nonce:
        raise problems.bad_nonce("The protected header has no nonce (RFC 8555 §6.5).")
    signed_url = protected.get("url")
    if not isinstance(signed_url, str):
        raise problems.malformed("The protected header has no url (RFC 8555 §6.4).")
    if signed_url != url:
        raise problems.unauthorized(f"The signed url {signed_url!r} is not the request URL {url!r} (RFC 8555 §6.4).")
    return JWS(protected, protected_b64, payload_b64, payload, signature)


def _int(value: Any, member: str) -> int:
    return int.from_bytes(b64decode(value, f"The JWK member {member}"), "big")


@lru_cache(maxsize=4096)
def _public_key_cached(canonical: str) -> PublicKey:
    return _parse_public_key(json.loads(canonical))


def _parse_public_key(jwk: dict[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if "d" in jwk:
        raise problems.bad_public_key("The JWK holds a private key; send the public key only.")
    if kty == "RSA":
        n, e = _int(jwk.get("n"), "n"), _int(jwk.get("e"), "e")
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
            raise problems.bad_public_key(
                f"The RSA key has {n.bit_length()} bits; use {MIN_RSA_BITS} to {MAX_RSA_BITS}."
            )
        if e < 3 or e % 2 == 0:
            raise problems.bad_public_key("The RSA public exponent is invalid.")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC":
        crv = jwk.get("crv")
        if crv not in _CURVES:
            raise problems.bad_public_key(f"The EC curve {crv!r} is not supported; use P-256, P-384 or P-521.")
        x, y = _int(jwk.get("x"), "x"), _int(jwk.get("y"), "y")
        try:
            return ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]()).public_key()
        except ValueError:
            raise problems.bad_public_key("The EC point is not on the curve.") from None
    if kty == "OKP":
        crv = jwk.get("crv")
        raw = b64decode(jwk.get("x"), "The JWK member x")
        try:
            if crv == "Ed25519":
                return ed25519.Ed25519PublicKey.from_public_bytes(raw)
            if crv == "Ed448":
                return ed448.Ed448PublicKey.from_public_bytes(raw)
        except ValueError:
            raise problems.bad_public_key(f"The {crv} key is malformed.") from None
        raise problems.bad_public_key(f"The OKP curve {crv!r} is not supported; use Ed25519 or Ed448.")
    raise problems.bad_public_key(f"The key type {kty!r} is not supported; use RSA, EC or OKP.")


_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def canonical_jwk(jwk: dict[str, Any]) -> str:
    """The JWK's required members as RFC 7638 orders them: the input of its thumbprint."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise problems.bad_public_key(f"The key type {jwk.get('kty')!r} is not supported; use RSA, EC or OKP.")
    if any(not isinstance(jwk.get(member), str) for member in members):
        raise problems.bad_public_key(f"The JWK needs the members {', '.join(members)}.")
    return json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)


def public_key(jwk: dict[str, Any]) -> PublicKey:
    if "d" in jwk:
        raise problems.bad_public_key("The JWK holds a private key; send the public key only.")
    return _public_key_cached(canonical_jwk(jwk))


def stored_public_key(canonical: str) -> PublicKey:
    """An account's key from the canonical JWK it is stored as, parsed once per process (cached)."""
    return _public_key_cached(canonical)


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    return b64encode(hashlib.sha256(canonical_jwk(jwk).encode("utf-8")).digest())


def key_authorization(token: str, jwk: dict[str, Any]) -> str:
    """RFC 8555 §8.1."""
    return f"{token}.{thumbprint(jwk)}"


def jwk_from_key(key: PublicKey) -> dict[str, str]:
    """The public JWK of a key (used to compare a CSR's key with an account's)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": b64encode(_to_bytes(numbers.n)), "e": b64encode(_to_bytes(numbers.e))}
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported curve {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        return {"kty": "EC", "crv": crv, "x": b64encode(point.x.to_bytes(size, "big")),
                "y": b64encode(point.y.to_bytes(size, "big"))}
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
    return {"kty": "OKP", "crv": crv, "x": b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))}


def _to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def verify(jws: JWS, key: PublicKey) -> None:
    """Check the signature with ``key``, and that ``alg`` fits the key (RFC 7518 §3)."""
    alg, signature, data = jws.alg, jws.signature, jws.signing_input
    try:
        if alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise _mismatch(alg, key)
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif alg in _EC_ALGORITHMS:
            crv, hash_class, size = _EC_ALGORITHMS[alg]
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVES[crv].name:
                raise _mismatch(alg, key)
            if len(signature) != 2 * size:  # RFC 7518 §3.4: R || S, each of the curve's size
                raise problems.malformed("The JWS signature has the wrong length for its algorithm.")
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_class()))
        elif alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                raise _mismatch(alg, key)
            key.verify(signature, data)
        else:  # parse() admits only ALGORITHMS
            raise problems.bad_signature_algorithm(f"Unsupported algorithm {alg!r}.", list(ALGORITHMS))
    except InvalidSignature:
        raise problems.malformed("The JWS signature is not valid for the key.") from None


def _mismatch(alg: str, key: object) -> problems.AcmeProblem:
    return problems.bad_signature_algorithm(
        f"The JWS algorithm {alg} does not fit the account's {type(key).__name__.replace('PublicKey', '')} key.",
        list(ALGORITHMS),
    )
