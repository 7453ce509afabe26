"""The pure parts of the ACME server without a server: JWS rules, nonces, identifiers, contacts, CSRs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pki_server.acme import jose, nonces, policy
from pki_server.acme.policy import Identifier
from pki_server.acme.problems import URN, AcmeProblem
from tests.acme.rawclient import PrivateKey, b64, make_csr, openssl_csr, public_jwk, sign

URL = "https://ca.example/acme/intermediate/new-order"
KID = "https://ca.example/acme/intermediate/acct/abc"


def problem_of(call: Any, *args: Any, **kwargs: Any) -> AcmeProblem:
    with pytest.raises(AcmeProblem) as info:
        call(*args, **kwargs)
    assert info.value.detail
    return info.value


def assert_type(problem: AcmeProblem, *types: str) -> None:
    assert problem.type in [URN + t for t in types], (problem.type, problem.detail)


def flattened(key: Any = None, *, payload: Any = None, alg: str | None = None, **header: Any) -> tuple[bytes, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    if alg is None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
        else:
            alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "EdDSA"
    protected = {"alg": alg, "nonce": "bm9uY2U", "url": URL, "jwk": public_jwk(key), **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    protected_b64 = b64(json.dumps(protected).encode())
    payload_b64 = "" if payload is None else b64(json.dumps(payload).encode())
    signature = sign(key, f"{protected_b64}.{payload_b64}".encode(), alg)
    body = {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}
    return json.dumps(body).encode(), key


# --- b64decode -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "data"), [("", b""), ("AA", b"\0"), ("AAA", b"\0\0"), ("AAAA", b"\0\0\0"),
                                            ("-_8", b"\xfb\xff"), ("aGVsbG8", b"hello")])
def test_b64decode_accepts_unpadded_base64url(text: str, data: bytes) -> None:
    assert jose.b64decode(text, "x") == data


@pytest.mark.parametrize("text", ["aGVsbG8=", "AA==", "+/8", "a b", "A", "AAAAA", "é", "aGVs\nbG8", None, 12, b"AA"])
def test_b64decode_refuses_everything_else(text: Any) -> None:
    problem = problem_of(jose.b64decode, text, "The thing")
    assert_type(problem, "malformed")
    assert "The thing" in problem.detail


# --- parse -----------------------------------------------------------------------------------------------------------

def test_parse_reads_a_flattened_jws() -> None:
    body, key = flattened(payload={"a": 1})
    jws = jose.parse(body, url=URL)
    assert (jws.alg, jws.nonce, jws.url, jws.kid) == ("ES256", "bm9uY2U", URL, None)
    assert jws.jwk == public_jwk(key)
    assert jws.json_payload() == {"a": 1}
    assert not jws.is_post_as_get


def test_parse_post_as_get() -> None:
    body, _ = flattened(payload=None)
    jws = jose.parse(body, url=URL)
    assert jws.is_post_as_get
    assert_type(problem_of(jws.json_payload), "malformed")


@pytest.mark.parametrize("body", [
    b"", b"nope", b"[]", b'"jws"', b"\xff",
    b'{"payload": "", "signatures": []}',
    b'{"protected": "e30", "payload": "", "signature": "", "header": {}}',
    b'{"protected": "e30", "payload": ""}',
    b'{"protected": "e30=", "payload": "", "signature": ""}',
    b'{"protected": "bm9wZQ", "payload": "", "signature": ""}',
    b'{"protected": "WzFd", "payload": "", "signature": ""}',
], ids=["empty", "text", "list", "string", "binary", "general", "header", "no-signature", "padded", "not-json",
        "protected-list"])
def test_parse_refuses_what_is_not_a_flattened_jws(body: bytes) -> None:
    assert_type(problem_of(jose.parse, body, url=URL), "malformed")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS1", "RS384", "PS256", "ES256K", "Ed25519", "", None, 1])
def test_parse_refuses_other_algorithms(alg: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    protected = {"alg": alg, "nonce": "bm9uY2U", "url": URL, "jwk": public_jwk(key)}
    body = json.dumps({"protected": b64(json.dumps(protected).encode()), "payload": "", "signature": ""}).encode()
    problem = problem_of(jose.parse, body, url=URL)
    assert_type(problem, "badSignatureAlgorithm")
    assert problem.to_json()["algorithms"] == ["RS256", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize(("header", "kind"), [
    ({"kid": KID}, "malformed"),  # both jwk and kid
    ({"jwk": None}, "malformed"),  # neither
    ({"jwk": "a key"}, "malformed"),
    ({"jwk": None, "kid": 5}, "malformed"),
    ({"nonce": None}, "badNonce"),
    ({"nonce": ""}, "badNonce"),
    ({"nonce": 5}, "badNonce"),
    ({"url": None}, "malformed"),
    ({"url": URL + "/"}, "unauthorized"),
    ({"url": URL.replace("https", "http")}, "unauthorized"),
    ({"b64": False}, "malformed"),
    ({"crit": ["b64"]}, "malformed"),
])
def test_parse_checks_the_protected_header(header: dict[str, Any], kind: str) -> None:
    body, _ = flattened(payload={}, **header)
    assert_type(problem_of(jose.parse, body, url=URL), kind)


def test_parse_inner_jws_of_a_key_change() -> None:
    body, _ = flattened(payload={}, nonce=None)
    assert jose.parse(body, url=URL, inner=True).jwk is not None
    with_nonce, _ = flattened(payload={})
    assert_type(problem_of(jose.parse, with_nonce, url=URL, inner=True), "malformed")
    with_kid, _ = flattened(payload={}, nonce=None, jwk=None, kid=KID)
    assert_type(problem_of(jose.parse, with_kid, url=URL, inner=True), "malformed")


@pytest.mark.parametrize("payload", [b"nope", b"[1]", b"1", b"\xff\xfe"])
def test_json_payload_must_be_an_object(payload: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    protected_b64 = b64(json.dumps({"alg": "ES256", "nonce": "bm9uY2U", "url": URL, "jwk": public_jwk(key)}).encode())
    body = json.dumps({"protected": protected_b64, "payload": b64(payload), "signature": ""}).encode()
    assert_type(problem_of(jose.parse(body, url=URL).json_payload), "malformed")


# --- verify ----------------------------------------------------------------------------------------------------------

KEYS: dict[str, Callable[[], PrivateKey]] = {
    "RS256": lambda: rsa.generate_private_key(65537, 2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
}


@pytest.mark.parametrize("alg", list(KEYS))
def test_verify_each_algorithm(alg: str) -> None:
    body, _ = flattened(KEYS[alg](), payload={"x": 1})
    jws = jose.parse(body, url=URL)
    assert jws.alg == alg
    jose.verify(jws, jose.public_key(jws.jwk))  # type: ignore[arg-type]
    # Any other byte signed is a bad signature.
    document = json.loads(body)
    document["payload"] = b64(b'{"x": 2}')
    tampered = jose.parse(json.dumps(document).encode(), url=URL)
    assert_type(problem_of(jose.verify, tampered, jose.public_key(jws.jwk)), "malformed")  # type: ignore[arg-type]


@pytest.mark.parametrize(("alg", "key_alg"), [("ES256", "RS256"), ("RS256", "ES256"), ("ES384", "ES256"),
                                              ("ES256", "ES512"), ("EdDSA", "ES256"), ("ES256", "EdDSA")])
def test_verify_refuses_an_algorithm_that_does_not_fit_the_key(alg: str, key_alg: str) -> None:
    key = KEYS[key_alg]()
    body, _ = flattened(key, payload={}, alg=alg)
    jws = jose.parse(body, url=URL)
    assert_type(problem_of(jose.verify, jws, jose.public_key(public_jwk(key))), "badSignatureAlgorithm", "malformed")


def test_verify_refuses_a_der_ecdsa_signature() -> None:
    """RFC 7518 §3.4: R || S, not the DER encoding."""
    key = ec.generate_private_key(ec.SECP256R1())
    body, _ = flattened(key, payload={})
    document = json.loads(body)
    signing_input = f"{document['protected']}.{document['payload']}".encode()
    document["signature"] = b64(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    jws = jose.parse(json.dumps(document).encode(), url=URL)
    assert_type(problem_of(jose.verify, jws, jose.public_key(public_jwk(key))), "malformed")


# --- keys and thumbprints --------------------------------------------------------------------------------------------

RFC7638_JWK = {
    "kty": "RSA",
    "n": ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
          "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
          "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
          "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_thumbprint_rfc7638_example() -> None:
    """RFC 7638 §3.1; members other than the required ones (alg, kid) do not count."""
    assert jose.thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jose.canonical_jwk(RFC7638_JWK).startswith('{"e":"AQAB","kty":"RSA","n":"0vx7')
    assert jose.public_key(RFC7638_JWK).key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES512"])
def test_thumbprint_agrees_with_josepy(alg: str) -> None:
    import josepy

    key = KEYS[alg]().public_key()
    jwk = josepy.JWKRSA(key=key) if alg == "RS256" else josepy.JWKEC(key=key)
    assert jose.thumbprint(jwk.to_json()) == b64(jwk.thumbprint())


def test_key_authorization() -> None:
    assert jose.key_authorization("tok", RFC7638_JWK) == "tok.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", list(KEYS))
def test_jwk_from_key_round_trips(alg: str) -> None:
    key = KEYS[alg]().public_key()
    jwk = jose.jwk_from_key(key)
    assert jose.public_key(jwk) == key
    assert jose.canonical_jwk(jwk) == jose.canonical_jwk(public_jwk_of(key))


def public_jwk_of(key: Any) -> dict[str, str]:
    """The JWK josepy makes of a public key (EdDSA: RFC 8037 by hand)."""
    import josepy

    if isinstance(key, rsa.RSAPublicKey):
        return dict(josepy.JWKRSA(key=key).to_json())
    if isinstance(key, ec.EllipticCurvePublicKey):
        return dict(josepy.JWKEC(key=key).to_json())
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_bytes_raw())}


def _rsa_jwk(bits: int, e: int = 65537) -> dict[str, str]:
    n = rsa.generate_private_key(65537, bits).public_key().public_numbers().n
    return {"kty": "RSA", "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
            "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big"))}


@pytest.mark.parametrize(("jwk", "words"), [
    (_rsa_jwk(1024), "1024"),
    (_rsa_jwk(2048, e=65536), "exponent"),
    (_rsa_jwk(2048, e=1), "exponent"),
    ({"kty": "EC", "crv": "P-256", "x": b64(b"\1" * 32), "y": b64(b"\2" * 32)}, "curve"),
    ({"kty": "EC", "crv": "secp256k1", "x": b64(b"\1" * 32), "y": b64(b"\2" * 32)}, "secp256k1"),
    ({"kty": "OKP", "crv": "X25519", "x": b64(b"\1" * 32)}, "X25519"),
    ({"kty": "OKP", "crv": "Ed25519", "x": b64(b"\1" * 31)}, "Ed25519"),
    ({"kty": "oct", "k": "c2VjcmV0"}, "oct"),
    ({"kty": "RSA", "e": "AQAB"}, "n"),
    ({"kty": "EC", "crv": "P-256", "x": b64(b"\1" * 32)}, "y"),
], ids=["rsa1024", "even-e", "e1", "off-curve", "secp256k1", "x25519", "short-ed25519", "oct", "no-n", "no-y"])
def test_public_key_refuses_unusable_keys(jwk: dict[str, str], words: str) -> None:
    problem = problem_of(jose.public_key, jwk)
    assert_type(problem, "badPublicKey", "malformed")
    assert words in problem.detail


def test_public_key_refuses_a_private_jwk() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**public_jwk(key), "d": b64(key.private_numbers().private_value.to_bytes(32, "big"))}
    problem = problem_of(jose.public_key, jwk)
    assert_type(problem, "badPublicKey")
    assert "private" in problem.detail


# --- nonces ----------------------------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "database"])
def nonce_store(request: pytest.FixtureRequest, settings) -> str:  # type: ignore[no-untyped-def]
    settings.PKI_ACME_NONCE_STORE = request.param
    return str(request.param)


def redeem(nonce: str) -> None:
    """Spend a nonce as a request does, in the store the settings name."""
    remaining = nonces.check(nonce)
    if nonces.store() == "memory":
        nonces.redeem_in_memory(nonce)
    else:
        nonces.redeem_in_database(nonce, remaining)


def test_nonce_is_good_for_an_hour(nonce_store: str) -> None:
    nonce = nonces.make()
    assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) == 32
    assert "=" not in nonce
    assert nonces.LIFETIME - 2 <= nonces.check(nonce) <= nonces.LIFETIME
    assert nonces.make() != nonce


@pytest.mark.parametrize("nonce", ["not a nonce", "abc=", "a+b/", "A"])
def test_a_nonce_that_is_not_base64url_is_malformed(nonce: str, nonce_store: str) -> None:
    assert_type(problem_of(nonces.check, nonce), "malformed")


def test_a_nonce_of_another_secret_is_bad_nonce(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_ACME_NONCE_STORE = "database"
    nonce = nonces.make()
    settings.SECRET_KEY = "another server's secret, not shared"
    assert_type(problem_of(nonces.check, nonce), "badNonce")


def test_a_nonce_with_a_changed_byte_is_bad_nonce(nonce_store: str, settings) -> None:  # type: ignore[no-untyped-def]
    """The MAC (keyed BLAKE2b) covers the issue time and serial, and a wrong tag is refused as such."""
    raw = bytearray(nonces.b64decode(nonces.make(), "The nonce"))
    key = nonces.memory().key if nonces.store() == "memory" else nonces._shared_key(settings.SECRET_KEY)
    assert bytes(raw[16:]) == hashlib.blake2b(bytes(raw[:16]), key=key, digest_size=16).digest()
    for index in (0, 7, 8, 15, 16, 31):  # issue time, serial, tag
        changed = bytearray(raw)
        changed[index] ^= 0x01
        problem = problem_of(nonces.check, nonces.b64encode(bytes(changed)))
        assert_type(problem, "badNonce")
        assert "not issued" in problem.detail


def test_an_old_nonce_is_bad_nonce(monkeypatch: pytest.MonkeyPatch, nonce_store: str) -> None:
    nonce = nonces.make()
    now = time.time()
    monkeypatch.setattr(nonces.time, "time", lambda: now + nonces.LIFETIME - 5)
    assert 0 < nonces.check(nonce) <= 6
    monkeypatch.setattr(nonces.time, "time", lambda: now + nonces.LIFETIME + 1)
    problem = problem_of(nonces.check, nonce)
    assert_type(problem, "badNonce")
    assert "expired" in problem.detail


@pytest.mark.django_db
def test_a_nonce_is_redeemed_once(nonce_store: str) -> None:
    nonce = nonces.make()
    redeem(nonce)
    problem = problem_of(redeem, nonce)
    assert_type(problem, "badNonce")
    assert "used already" in problem.detail
    other = nonces.make()
    redeem(other)


def test_auto_picks_the_store_from_the_topology(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_ACME_NONCE_STORE = "auto"
    settings.PKI_REDIS_URL = None
    assert nonces.store() == "memory"  # the test database is SQLite: the embedded server
    settings.DATABASES = {"default": {**settings.DATABASES["default"], "ENGINE": "django.db.backends.postgresql"}}
    assert nonces.store() == "database"
    settings.PKI_REDIS_URL = "redis://127.0.0.1:6379/13"
    assert nonces.store() == "redis"
    settings.PKI_ACME_NONCE_STORE = "memory"
    assert nonces.store() == "memory"


def test_a_memory_nonce_is_good_only_at_the_process_that_made_it(settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_ACME_NONCE_STORE = "memory"
    nonce = nonces.make()
    monkeypatch.setattr(nonces, "_memory", nonces.MemoryNonces())  # another process, or this one restarted
    problem = problem_of(nonces.check, nonce)
    assert_type(problem, "badNonce")
    assert "not issued by this server" in problem.detail
    # A forked child starts its own store: its parent's nonces are no good there.
    parent_nonce = nonces.make()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: is the parent's nonce good here? (exit status 0: no, as it must be)
        os.close(reader)
        try:
            nonces.check(parent_nonce)
            os._exit(1)
        except nonces.problems.AcmeProblem as problem:
            os.write(writer, problem.type.encode())
            os._exit(0)
        except BaseException:
            os._exit(2)
    os.close(writer)
    _pid, status = os.waitpid(child, 0)
    said = os.read(reader, 200).decode()
    os.close(reader)
    assert os.waitstatus_to_exitcode(status) == 0 and said.endswith("badNonce")
    nonces.check(parent_nonce)  # still good in the parent


def test_memory_nonces_outside_the_window_are_bad_nonce(settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_ACME_NONCE_STORE = "memory"
    monkeypatch.setattr(nonces.MemoryNonces, "WINDOW", 16)
    monkeypatch.setattr(nonces, "_memory", nonces.MemoryNonces())
    made = [nonces.make() for _ in range(20)]
    for nonce in made[:4]:  # pushed out of the window by the sixteen made after them
        problem = problem_of(redeem, nonce)
        assert_type(problem, "badNonce")
        assert "expired" in problem.detail
    for nonce in made[4:]:
        redeem(nonce)
    for nonce in made[4:]:
        assert_type(problem_of(redeem, nonce), "badNonce")
    # The spent marks are cleared as the window moves on: sixteen new nonces are all good once.
    for nonce in [nonces.make() for _ in range(16)]:
        redeem(nonce)
    # A serial this process never made (forged, with the right key) is refused too.
    state = nonces.memory()
    body = nonces._STRUCT.pack(int(time.time()), state.next + 5)
    forged = nonces.b64encode(body + nonces.mac(state.key, body))
    assert "not issued" in problem_of(redeem, forged).detail


# --- identifiers -----------------------------------------------------------------------------------------------------

def dns(value: str) -> dict[str, str]:
    return {"type": "dns", "value": value}


@pytest.mark.parametrize(("value", "expected"), [
    ("www.example.com", "www.example.com"),
    ("WWW.Example.COM", "www.example.com"),
    ("*.example.com", "*.example.com"),
    ("*.Example.Com", "*.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.example", "a-b.example"),
])
def test_dns_identifiers(value: str, expected: str) -> None:
    identifier = policy.parse_identifier(dns(value))
    assert identifier == Identifier("dns", expected)
    assert identifier.wildcard == expected.startswith("*.")
    assert identifier.base == expected.removeprefix("*.")
    assert identifier.to_json() == {"type": "dns", "value": expected}


@pytest.mark.parametrize("value", [
    "www.example.com.", "*.example.com.", "a.*.example.com", "*example.com", "*.*.example.com", "ex*mple.com", "*",
    "*.", "*.com", "localhost", "", ".", "a..example", "-a.example", "a-.example", "a_b.example", "bücher.example",
    "a b.example", "a\n.example.com", "example.123", "192.0.2.1", "2001:db8::1", "a" * 64 + ".example",
    ("a" * 60 + ".") * 5 + "example",
])
def test_rejected_dns_identifiers(value: str) -> None:
    problem = problem_of(policy.parse_identifier, dns(value))
    assert_type(problem, "rejectedIdentifier")


@pytest.mark.parametrize(("value", "expected"), [
    ("192.0.2.1", "192.0.2.1"), ("2001:DB8:0:0::1", "2001:db8::1"), ("::ffff:192.0.2.1", "::ffff:c000:201"),
])
def test_ip_identifiers(value: str, expected: str) -> None:
    """RFC 8738; addresses in their canonical text form (RFC 5952 for IPv6)."""
    assert policy.parse_identifier({"type": "ip", "value": value}) == Identifier("ip", expected)


@pytest.mark.parametrize("value", ["192.0.2", "192.0.2.256", "010.0.0.1", "example.com", "2001:db8::1::2", ""])
def test_bad_ip_identifiers(value: str) -> None:
    assert_type(problem_of(policy.parse_identifier, {"type": "ip", "value": value}), "malformed",
                "rejectedIdentifier")


@pytest.mark.parametrize("raw", [{"type": "email", "value": "a@example.com"}, {"type": "DNS", "value": "a.example"}])
def test_unsupported_identifier_types(raw: dict[str, str]) -> None:
    assert_type(problem_of(policy.parse_identifier, raw), "unsupportedIdentifier")


@pytest.mark.parametrize("raw", ["a.example", {"value": "a.example"}, {"type": "dns"}, {"type": "dns", "value": 1},
                                 None, ["dns", "a.example"]])
def test_malformed_identifiers(raw: Any) -> None:
    assert_type(problem_of(policy.parse_identifier, raw), "malformed")


def test_parse_identifiers_sorts_and_collapses_duplicates() -> None:
    identifiers = policy.parse_identifiers([
        dns("b.example.com"), dns("A.example.com"), dns("a.example.com"), {"type": "ip", "value": "192.0.2.1"},
        dns("*.example.com"), dns("B.EXAMPLE.COM"),
    ])
    assert identifiers == [Identifier("dns", "*.example.com"), Identifier("dns", "a.example.com"),
                           Identifier("dns", "b.example.com"), Identifier("ip", "192.0.2.1")]


@pytest.mark.parametrize("raw", [None, [], {}, "a.example", {"identifiers": [dns("a.example")]}])
def test_parse_identifiers_needs_a_non_empty_list(raw: Any) -> None:
    assert_type(problem_of(policy.parse_identifiers, raw), "malformed")


def test_parse_identifiers_limits_the_count() -> None:
    names = [dns(f"n{i}.example.com") for i in range(policy.MAX_IDENTIFIERS)]
    assert len(policy.parse_identifiers(names)) == policy.MAX_IDENTIFIERS
    problem = problem_of(policy.parse_identifiers, [*names, dns("one-more.example.com")])
    assert_type(problem, "rejectedIdentifier")
    assert str(policy.MAX_IDENTIFIERS) in problem.detail


def test_parse_identifiers_reports_each_bad_one_as_a_subproblem() -> None:
    """RFC 8555 §6.7.1: one problem for the order, a subproblem per identifier it refuses."""
    raw = [dns("good.example.com"), dns("bad.example.com."), {"type": "email", "value": "a@example.com"},
           dns("also-good.example.com")]
    problem = problem_of(policy.parse_identifiers, raw)
    assert_type(problem, "rejectedIdentifier")
    document = problem.to_json()
    assert [sub["identifier"] for sub in document["subproblems"]] == [raw[1], raw[2]]
    assert [sub["type"] for sub in document["subproblems"]] == [URN + "rejectedIdentifier",
                                                                 URN + "unsupportedIdentifier"]
    assert all(sub["detail"] for sub in document["subproblems"])
    assert "bad.example.com." in document["detail"] and "good.example.com'" not in document["detail"]


def test_parse_identifiers_with_one_bad_identifier_raises_its_problem() -> None:
    assert_type(problem_of(policy.parse_identifiers, [{"type": "email", "value": "a@b.c"}]), "unsupportedIdentifier")


# --- contacts --------------------------------------------------------------------------------------------------------

def test_contacts() -> None:
    assert policy.parse_contacts(None, required=False) == []
    assert policy.parse_contacts([], required=False) == []
    assert policy.parse_contacts(["mailto:admin@example.com", "MAILTO:ops+pki@sub.example.org"], required=True) == [
        "mailto:admin@example.com", "mailto:ops+pki@sub.example.org"]


@pytest.mark.parametrize(("raw", "kind"), [
    ("mailto:a@example.com", "malformed"),
    ([1], "malformed"),
    ({"mailto": "a@example.com"}, "malformed"),
    (["tel:+4312345"], "unsupportedContact"),
    (["https://example.com/contact"], "unsupportedContact"),
    (["a@example.com"], "unsupportedContact"),
    (["mailto:"], "invalidContact"),
    (["mailto:not-an-address"], "invalidContact"),
    (["mailto:a@example.com,b@example.com"], "invalidContact"),
    (["mailto:a@example.com?subject=hi"], "invalidContact"),
    (["mailto:a@localhost"], "invalidContact"),
    (["mailto:a@example.com\n"], "invalidContact"),
    ([f"mailto:a{i}@example.com" for i in range(policy.MAX_CONTACTS + 1)], "invalidContact"),
])
def test_bad_contacts(raw: Any, kind: str) -> None:
    assert_type(problem_of(policy.parse_contacts, raw, required=False), kind)


def test_required_contact() -> None:
    assert_type(problem_of(policy.parse_contacts, None, required=True), "invalidContact")
    assert_type(problem_of(policy.parse_contacts, [], required=True), "invalidContact")


# --- CSRs ------------------------------------------------------------------------------------------------------------

ACCOUNT_KEY = ec.generate_private_key(ec.SECP256R1())
ACCOUNT_JWK = public_jwk(ACCOUNT_KEY)
NAMES = [Identifier("dns", "a.example.com"), Identifier("dns", "b.example.com")]


def check(csr: x509.CertificateSigningRequest, identifiers: list[Identifier] = NAMES) -> None:
    policy.check_csr(csr, identifiers, ACCOUNT_JWK)


def bad_csr(csr: x509.CertificateSigningRequest, identifiers: list[Identifier] = NAMES) -> str:
    problem = problem_of(check, csr, identifiers)
    assert_type(problem, "badCSR")
    return problem.detail


def test_check_csr_accepts_the_order_names() -> None:
    check(make_csr(["a.example.com", "b.example.com"]))
    check(make_csr(["B.Example.com", "a.example.com"]))
    check(make_csr(["a.example.com", "b.example.com"], rsa.generate_private_key(65537, 2048)))
    check(make_csr(["a.example.com", "b.example.com"], ec.generate_private_key(ec.SECP384R1()),
                   algorithm=hashes.SHA384()))


def test_check_csr_counts_the_common_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    only_cn = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a.example.com")]))
               .sign(key, hashes.SHA256()))
    check(only_cn, [Identifier("dns", "a.example.com")])
    assert "c.example.com" in bad_csr(
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "c.example.com")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example.com"), x509.DNSName("b.example.com")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def test_check_csr_ip_names() -> None:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                                                       x509.DNSName("a.example.com")]), critical=False)
           .sign(key, hashes.SHA256()))
    check(csr, [Identifier("ip", "2001:db8::1"), Identifier("dns", "a.example.com")])
    assert "2001:db8::1" in bad_csr(csr, [Identifier("dns", "a.example.com")])


def test_check_csr_names_what_differs() -> None:
    detail = bad_csr(make_csr(["a.example.com", "b.example.com", "c.example.com"]))
    assert "c.example.com" in detail and "not in the order" in detail and "missing" not in detail
    detail = bad_csr(make_csr(["a.example.com"]))
    assert "b.example.com" in detail and "missing" in detail and "not in the order" not in detail
    detail = bad_csr(make_csr(["a.example.com", "x.example.com"]))
    assert "x.example.com" in detail and "b.example.com" in detail


def test_check_csr_refuses_other_kinds_of_names() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example.com"), x509.DNSName("b.example.com"),
                                                       x509.RFC822Name("a@example.com")]), critical=False)
           .sign(key, hashes.SHA256()))
    assert "a@example.com" in bad_csr(csr)


@pytest.mark.parametrize(("key", "word"), [
    (rsa.generate_private_key(65537, 1024), "1024"),
    (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
    (ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
    (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
], ids=["rsa1024", "p521", "secp256k1", "ed25519"])
def test_check_csr_refuses_disallowed_keys(key: Any, word: str) -> None:
    assert word in bad_csr(make_csr(["a.example.com", "b.example.com"], key))


def test_check_csr_refuses_the_account_key() -> None:
    assert "account key" in bad_csr(make_csr(["a.example.com", "b.example.com"], ACCOUNT_KEY))


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_check_csr_refuses_weak_hashes(tmp_path: Path, digest: str) -> None:
    csr = x509.load_der_x509_csr(openssl_csr(tmp_path, "a.example.com", digest))
    assert digest.upper() in bad_csr(csr, [Identifier("dns", "a.example.com")])


def test_check_csr_refuses_a_bad_signature() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(make_csr(["a.example.com", "b.example.com"]).public_bytes(Encoding.DER))
    der[-5] ^= 0x01
    assert "signature" in bad_csr(x509.load_der_x509_csr(bytes(der)))


@pytest.mark.parametrize("der", [b"", b"garbage", b"\x30\x03\x02\x01\x01"])
def test_load_csr_refuses_garbage(der: bytes) -> None:
    assert_type(problem_of(policy.load_csr, der), "badCSR")
