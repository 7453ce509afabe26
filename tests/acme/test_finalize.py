"""Finalize (RFC 8555 §7.4) against the real server: every CSR the server must refuse, and the race.

A refused finalize leaves the order ``ready`` with nothing stored, so the client can fix its CSR and
finalize again; concurrent finalize requests on one order issue exactly one certificate.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.acme.rawclient import JOSE, RawClient, assert_problem, b64, make_csr, openssl_csr, unique_name
from tests.acme.server import PkiServer


@pytest.fixture
def client(pki_server: PkiServer) -> Iterator[RawClient]:
    raw = RawClient(pki_server)
    raw.register()
    yield raw
    raw.close()


def order_row(server: PkiServer, order_url: str) -> tuple[str, str, int | None]:
    slug = order_url.rstrip("/").rpartition("/")[2]
    [(status, csr, certificate_id)] = server.query(
        "SELECT status, csr, certificate_id FROM pki_acme_acmeorder WHERE slug = ?", slug
    )
    return status, csr, certificate_id


def certificates_for(server: PkiServer, name: str) -> int:
    return int(server.query("SELECT COUNT(*) FROM pki_core_certificate WHERE sans LIKE ?", f"%{name}%")[0][0])


def finalize_good(client: RawClient, order_url: str, order: dict, names: list[str]) -> x509.Certificate:
    """Finalize with an acceptable CSR, wait for issuance and return the leaf."""
    key = ec.generate_private_key(ec.SECP256R1())
    response = client.finalize(order, make_csr(names, key))
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("processing", "valid")
    valid = client.wait_order(order_url, ("valid",))
    chain = client.post(valid["certificate"], None)
    assert chain.status_code == 200, chain.text
    assert chain.headers["Content-Type"] == "application/pem-certificate-chain"
    leaf = x509.load_pem_x509_certificates(chain.content)[0]
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    return leaf


def assert_refused_and_still_ready(client: RawClient, order_url: str, order: dict, names: list[str],
                                   response: httpx.Response, *types: str) -> dict:
    """The refusal is a problem, nothing was stored, the order is still ready and a good CSR then works."""
    problem = assert_problem(response, 400, *types)
    status, csr, certificate_id = order_row(client.server, order_url)
    assert (status, csr, certificate_id) == ("ready", "", None)
    assert client.post(order_url, None).json()["status"] == "ready"
    assert certificates_for(client.server, names[0]) == 0
    finalize_good(client, order_url, order, names)
    assert certificates_for(client.server, names[0]) == 1
    return problem


# --- order state -----------------------------------------------------------------------------------------------------

def test_finalize_before_ready_is_order_not_ready(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.new_order(name)
    assert order["status"] == "pending"
    before = client.snapshot()
    response = client.finalize(order, make_csr([name]))
    problem = assert_problem(response, 403, "orderNotReady")
    assert "pending" in problem["detail"]
    client.assert_nothing_written(before)
    assert order_row(client.server, order_url) == ("pending", "", None)
    # Once authorized, the same order finalizes.
    client.authorize(order)
    client.wait_order(order_url, ("ready",))
    finalize_good(client, order_url, order, [name])


def test_finalize_of_a_valid_order_is_order_not_ready(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    finalize_good(client, order_url, order, [name])
    before = client.snapshot()
    problem = assert_problem(client.finalize(order, make_csr([name])), 403, "orderNotReady")
    assert "valid" in problem["detail"]
    client.assert_nothing_written(before)
    assert certificates_for(client.server, name) == 1


def test_finalize_of_another_accounts_order_is_unauthorized(client: RawClient, pki_server: PkiServer) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    other = RawClient(pki_server)
    try:
        other.register()
        assert_problem(other.finalize(order, make_csr([name])), 403, "unauthorized")
    finally:
        other.close()
    assert order_row(pki_server, order_url)[0] == "ready"


# --- names -----------------------------------------------------------------------------------------------------------

def test_csr_with_an_extra_name_is_bad_csr(client: RawClient) -> None:
    name, extra = unique_name(), unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, make_csr([name, extra]))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
    assert extra in problem["detail"] and "not in the order" in problem["detail"]


def test_csr_missing_a_name_is_bad_csr(client: RawClient) -> None:
    first, second = unique_name(), unique_name()
    order_url, order = client.ready_order(first, second)
    response = client.finalize(order, make_csr([first]))
    problem = assert_refused_and_still_ready(client, order_url, order, [first, second], response, "badCSR")
    assert second in problem["detail"] and "missing" in problem["detail"]
    assert first not in problem["detail"]


def test_csr_with_an_extra_common_name_is_bad_csr(client: RawClient) -> None:
    name, other = unique_name(), unique_name()
    order_url, order = client.ready_order(name)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, other)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], client.finalize(order, csr), "badCSR")
    assert other in problem["detail"]


def test_csr_names_compare_case_insensitively(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, make_csr([name.upper()]))
    assert response.status_code == 200, response.text
    client.wait_order(order_url, ("valid",))


# --- keys ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("make_key", "words"), [
    (lambda: rsa.generate_private_key(65537, 1024), ["1024", "2048"]),
    (lambda: ec.generate_private_key(ec.SECP521R1()), ["secp521r1"]),
    (lambda: ec.generate_private_key(ec.SECP256K1()), ["secp256k1"]),
    (lambda: ed25519.Ed25519PrivateKey.generate(), ["Ed25519"]),
], ids=["rsa1024", "p521", "secp256k1", "ed25519"])
def test_csr_with_a_disallowed_key_is_bad_csr(client: RawClient, make_key, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    name = unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, make_csr([name], make_key()))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
    for word in words:
        assert word in problem["detail"]


def test_csr_with_rsa_2048_is_accepted(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, make_csr([name], rsa.generate_private_key(65537, 2048)))
    assert response.status_code == 200, response.text
    client.wait_order(order_url, ("valid",))


def test_csr_with_the_account_key_is_bad_csr(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, make_csr([name], client.key))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
    assert "account key" in problem["detail"]


def test_csr_with_the_rsa_account_key_is_bad_csr(pki_server: PkiServer) -> None:
    client = RawClient(pki_server, key=rsa.generate_private_key(65537, 2048))
    try:
        client.register()
        name = unique_name()
        order_url, order = client.ready_order(name)
        response = client.finalize(order, make_csr([name], client.key))
        problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
        assert "account key" in problem["detail"]
    finally:
        client.close()


# --- signatures ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_csr_signed_with_a_weak_hash_is_bad_csr(client: RawClient, tmp_path: Path, digest: str) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    response = client.finalize(order, openssl_csr(tmp_path, name, digest))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
    assert digest.upper() in problem["detail"]


def test_csr_with_a_broken_signature_is_bad_csr(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    der = bytearray(make_csr([name], rsa.generate_private_key(65537, 2048)).public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0x01  # inside the signature
    response = client.finalize(order, bytes(der))
    problem = assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")
    assert "signature" in problem["detail"]


# --- encoding --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    {"csr": b64(b"this is no CSR")},
    {"csr": "not base64url!"},
    {"csr": "PEM? -----BEGIN"},
    {"csr": 42},
    {},
    {"csr": ""},
], ids=["garbage-der", "not-b64", "pem-ish", "number", "missing", "empty"])
def test_garbage_csr_is_refused(client: RawClient, payload: dict) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    before = client.snapshot()
    response = client.post(order["finalize"], payload)
    client.assert_nothing_written(before)
    assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR", "malformed")


def test_pem_csr_instead_of_der_is_bad_csr(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    pem = make_csr([name]).public_bytes(serialization.Encoding.PEM)
    response = client.post(order["finalize"], {"csr": b64(pem)})
    assert_refused_and_still_ready(client, order_url, order, [name], response, "badCSR")


# --- the race --------------------------------------------------------------------------------------------------------

def test_concurrent_finalize_issues_exactly_one_certificate(client: RawClient) -> None:
    name = unique_name()
    order_url, order = client.ready_order(name)
    threads_count = 8
    # Each request is prepared in full beforehand (own nonce, own CSR), so all go out together.
    bodies = []
    for _ in range(threads_count):
        csr = make_csr([name]).public_bytes(serialization.Encoding.DER)
        bodies.append(client.jws(client.protected(order["finalize"], nonce=client.fresh_nonce()), {"csr": b64(csr)}))
    barrier = threading.Barrier(threads_count)
    responses: list[httpx.Response | BaseException] = [RuntimeError("not run")] * threads_count

    def run(index: int) -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            try:
                responses[index] = http.post(order["finalize"], json=bodies[index], headers={"Content-Type": JOSE})
            except BaseException as ex:
                responses[index] = ex

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    results = [r for r in responses if isinstance(r, httpx.Response)]
    assert len(results) == threads_count, responses
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text) for r in results]
    for loser in (r for r in results if r.status_code != 200):
        assert_problem(loser, 403, "orderNotReady")
    client.wait_order(order_url, ("valid",))
    status, _csr, certificate_id = order_row(client.server, order_url)
    assert status == "valid" and certificate_id is not None
    assert certificates_for(client.server, name) == 1
