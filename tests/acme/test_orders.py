"""End to end against `pki-server serve`: orders, authorizations, challenges, finalize and the certificate
(RFC 8555 §7.1.6, §7.4, §7.5, §8.3), driven by the `acme` library's ClientV2 as certbot drives a server."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
from acme import errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from tests.acme.flow_helpers import (
    RawClient,
    answer_http01,
    assert_problem,
    authorize,
    b64,
    deadline,
    finalize,
    http01,
    make_csr_pem,
    new_order,
    no_new_tracebacks,
    obtain,
    order_json,
    post,
    register,
    table_counts,
    thumbprint,
    unique_name,
    wait_for,
    wait_order,
)
from tests.acme.server import PkiServer


@pytest.fixture(autouse=True)
def _server_log_clean(pki_server: PkiServer) -> Iterator[None]:
    with no_new_tracebacks(pki_server):
        yield


@pytest.fixture(scope="module")
def root_certificate(pki_server: PkiServer) -> x509.Certificate:
    """The root as `pki-server dump_ca root` writes it: the trust anchor a client would install."""
    return x509.load_pem_x509_certificate(pki_server.manage("dump_ca", "root").stdout.encode("ascii"))


def slug(url: str) -> str:
    return url.rpartition("/")[2]


def row(server: PkiServer, table: str, columns: str, url: str) -> tuple[Any, ...]:
    rows = server.query(f"SELECT {columns} FROM {table} WHERE slug = ?", slug(url))
    assert len(rows) == 1, rows
    return rows[0]


def sans(certificate: x509.Certificate) -> set[str]:
    return set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


def check_chain(pem: str, names: list[str], root: x509.Certificate,
                at: datetime.datetime | None = None) -> x509.Certificate:
    """Leaf then intermediate (then possibly the root); the chain verifies up to ``root`` for every name."""
    certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
    assert len(certificates) >= 2
    leaf, intermediate = certificates[0], certificates[1]
    assert sans(leaf) == set(names)
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert all(c == root for c in certificates[2:])
    verifier_builder = PolicyBuilder().store(Store([root]))
    if at is not None:
        verifier_builder = verifier_builder.time(at)
    for name in names:
        verified = verifier_builder.build_server_verifier(x509.DNSName(name)).verify(leaf, certificates[1:])
        assert verified[-1] == root
    return leaf


# --- A whole order, as a client runs it -------------------------------------------------------------------

def test_order_for_several_names(pki_server: PkiServer, root_certificate: x509.Certificate) -> None:
    acme = register(pki_server)
    names = [unique_name("www"), unique_name("api"), unique_name("mail")]
    orderr, _key = new_order(pki_server, acme, names)
    assert orderr.body.status == messages.STATUS_PENDING
    assert {i.value for i in orderr.body.identifiers} == set(names)
    assert len(orderr.authorizations) == 3
    assert {a.body.identifier.value for a in orderr.authorizations} == set(names)
    for authzr in orderr.authorizations:
        assert authzr.body.status == messages.STATUS_PENDING
        answer_http01(pki_server, acme, authzr)

    finished = acme.poll_and_finalize(orderr, deadline())
    leaf = check_chain(finished.fullchain_pem, names, root_certificate)
    assert finished.body.status == messages.STATUS_VALID

    # What the server stored: the order valid with its certificate, the authorizations and challenges valid.
    status, certificate_id = row(pki_server, "pki_acme_acmeorder", "status, certificate_id", orderr.uri)
    assert status == "valid"
    serial, der, cert_sans, revoked = pki_server.query(
        "SELECT serial, der, sans, revoked FROM pki_core_certificate WHERE id = ?", certificate_id)[0]
    assert int(serial, 16) == leaf.serial_number
    assert bytes(der) == leaf.public_bytes(serialization.Encoding.DER)
    assert set(cert_sans.split(",")) == {f"DNS:{name}" for name in names}
    assert not revoked
    for authzr in orderr.authorizations:
        assert row(pki_server, "pki_acme_acmeauthorization", "status", authzr.uri) == ("valid",)
        challb = next(c for c in authzr.body.challenges if c.chall.typ == "http-01")
        chall_status, record = row(pki_server, "pki_acme_acmechallenge", "status, validation_record", challb.uri)
        assert chall_status == "valid"
        assert json.loads(record)[0]["addressUsed"] == "127.0.0.1"


def test_embedded_finalize_issues_at_once(pki_server: PkiServer, root_certificate: x509.Certificate) -> None:
    """The embedded server runs its worker in the web process, so finalize signs then and there
    (RFC 8555 §7.4 lets the server answer "valid"); tests/acme/test_finalize_dispatch.py has the
    scaled path, where it answers "processing" with Retry-After and a worker signs."""
    acme = register(pki_server)
    name = unique_name()
    orderr, _key = new_order(pki_server, acme, [name])
    pending = post(acme, orderr.uri)
    assert pending.status_code == 200
    assert "Retry-After" not in pending.headers
    assert authorize(pki_server, acme, orderr)["status"] == "ready"

    csr = x509.load_pem_x509_csr(orderr.csr_pem)
    response = post(acme, orderr.body.finalize, messages.CertificateRequest(csr=csr).to_partial_json())
    assert response.status_code == 200, response.text
    assert response.headers["Location"] == orderr.uri
    valid = response.json()
    assert valid["status"] == "valid", valid
    assert "Retry-After" not in response.headers
    assert pki_server.query("SELECT status, lease_until, processing_since FROM pki_acme_acmeorder WHERE slug = ?",
                            slug(orderr.uri)) == [("valid", None, None)]
    polled = post(acme, orderr.uri)
    assert polled.json() == valid and "Retry-After" not in polled.headers
    assert valid["certificate"] == f"{pki_server.base_url}/acme/intermediate/cert/{slug(orderr.uri)}"

    download = post(acme, valid["certificate"])
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/pem-certificate-chain"
    assert 'rel="index"' in download.headers["Link"]
    check_chain(download.text, [name], root_certificate)

    # Finalizing a valid order again changes nothing.
    before = table_counts(pki_server)
    again = post(acme, orderr.body.finalize, messages.CertificateRequest(csr=csr).to_partial_json())
    assert_problem(again, 403, "orderNotReady")
    assert table_counts(pki_server) == before


def test_embedded_challenge_is_claimed_by_its_request(pki_server: PkiServer) -> None:
    """The embedded server validates in its own worker: the challenge request itself claims the
    challenge (processing, with the validation's lease, in one UPDATE) and hands it over in-process;
    the scaled path (a wake-up, then the worker claims) is in tests/scale."""
    acme = register(pki_server)
    orderr, _key = new_order(pki_server, acme, [unique_name()])
    pki_server.http01.delay = 1.5  # the validation is still running when the row is read
    try:
        challb = answer_http01(pki_server, acme, orderr.authorizations[0])
        status, since, lease = row(pki_server, "pki_acme_acmechallenge", "status, processing_since, lease_until",
                                   challb.uri)
    finally:
        pki_server.http01.delay = 0.0
    assert status == "processing"
    # Set together: the lease is the worker's validation lease (2 x PKI_ACME_VALIDATION_TIMEOUT + 5 s) from the
    # moment the request moved the challenge on; a worker's own claim would start it later.
    parsed = [datetime.datetime.fromisoformat(value) for value in (since, lease)]
    assert parsed[1] - parsed[0] == datetime.timedelta(seconds=2 * 10 + 5)
    assert wait_order(acme, orderr.uri, ("ready", "invalid"))["status"] == "ready"
    assert "Re-dispatching" not in pki_server.log_path.read_text()


def test_finalize_before_ready_is_order_not_ready(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    orderr, _key = new_order(pki_server, acme, [unique_name()])
    csr = x509.load_pem_x509_csr(orderr.csr_pem)
    response = post(acme, orderr.body.finalize, messages.CertificateRequest(csr=csr).to_partial_json())
    assert_problem(response, 403, "orderNotReady")
    assert row(pki_server, "pki_acme_acmeorder", "status, csr", orderr.uri) == ("pending", "")


def test_valid_authorization_is_reused(pki_server: PkiServer, root_certificate: x509.Certificate) -> None:
    acme = register(pki_server)
    name = unique_name()
    first, _certificate, _key = obtain(pki_server, acme, [name])
    challenges_before = pki_server.count("pki_acme_acmechallenge")

    csr_pem, _key = make_csr_pem([name])
    second = acme.new_order(csr_pem)
    assert second.body.status == messages.STATUS_READY  # no challenge to answer
    assert second.body.authorizations == first.body.authorizations
    assert second.authorizations[0].body.status == messages.STATUS_VALID
    assert pki_server.count("pki_acme_acmechallenge") == challenges_before
    _order, response = finalize(acme, second)
    check_chain(response.text, [name], root_certificate)

    # Another account gets an authorization of its own, pending.
    other = register(pki_server)
    foreign = other.new_order(make_csr_pem([name])[0])
    assert foreign.body.status == messages.STATUS_PENDING
    assert foreign.body.authorizations != first.body.authorizations


def test_authorization_deactivation(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    names = [unique_name("a"), unique_name("b")]
    orderr, _key = new_order(pki_server, acme, names)
    authzr = orderr.authorizations[0]
    deactivated = acme.deactivate_authorization(authzr)
    assert deactivated.body.status == messages.STATUS_DEACTIVATED
    assert row(pki_server, "pki_acme_acmeauthorization", "status", authzr.uri) == ("deactivated",)

    order = order_json(acme, orderr.uri)
    assert order["status"] == "invalid"
    assert order["error"]["type"].startswith("urn:ietf:params:acme:error:")
    status, error = row(pki_server, "pki_acme_acmeorder", "status, error", orderr.uri)
    assert status == "invalid" and json.loads(error)["detail"]

    # Deactivated is final (RFC 8555 §7.1.6), and its challenges can no longer be attempted.
    assert_problem(post(acme, authzr.uri, {"status": "deactivated"}), 400, "malformed")
    assert_problem(post(acme, authzr.uri, {"status": "valid"}), 400, "malformed")
    assert_problem(post(acme, authzr.body.challenges[0].uri, {}), 400, "malformed")
    # A new order for the name gets a new authorization.
    again, _key = new_order(pki_server, acme, [names[0]])
    assert again.authorizations[0].uri != authzr.uri
    assert again.body.status == messages.STATUS_PENDING


def test_deactivating_a_valid_authorization_ends_its_reuse(pki_server: PkiServer) -> None:
    acme = register(pki_server)
    name = unique_name()
    first, _certificate, _key = obtain(pki_server, acme, [name])
    authzr = first.authorizations[0]
    assert acme.deactivate_authorization(authzr).body.status == messages.STATUS_DEACTIVATED
    assert order_json(acme, first.uri)["status"] == "valid"  # a valid order stays valid
    second, _key = new_order(pki_server, acme, [name])
    assert second.body.status == messages.STATUS_PENDING
    assert second.authorizations[0].uri != authzr.uri


# --- Failed validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "kind", "says"), [
    (None, "unauthorized", "404"),
    ("not-the-key-authorization", "incorrectResponse", "not-the-key-authorization"),
], ids=["404", "wrong-content"])
def test_failed_http01(pki_server: PkiServer, content: str | None, kind: str, says: str) -> None:
    acme = register(pki_server)
    name = unique_name()
    orderr, _key = new_order(pki_server, acme, [name])
    authzr = orderr.authorizations[0]
    challb = http01(authzr)
    response, _validation = challb.response_and_validation(acme.net.key)
    if content is not None:  # else the responder has no such token and answers 404
        pki_server.http01.tokens[challb.chall.encode("token")] = content
    acme.answer_challenge(challb, response)
    with pytest.raises(errors.ValidationError) as failed:  # how ClientV2 reports it
        acme.poll_authorizations(orderr, deadline())
    # Re-read what the server concluded.
    authz = post(acme, authzr.uri).json()
    assert authz["status"] == "invalid"
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert challenge["status"] == "invalid"
    error = challenge["error"]
    assert failed.value.failed_authzrs[0].body.identifier.value == name
    assert error["type"] == f"urn:ietf:params:acme:error:{kind}", error
    assert "127.0.0.1" in error["detail"], error
    assert says in error["detail"], error
    order = order_json(acme, orderr.uri)
    assert order["status"] == "invalid"
    assert row(pki_server, "pki_acme_acmeorder", "status", orderr.uri) == ("invalid",)
    assert row(pki_server, "pki_acme_acmeauthorization", "status", authzr.uri) == ("invalid",)
    stored = json.loads(row(pki_server, "pki_acme_acmechallenge", "error", challb.uri)[0])
    assert stored == error


# --- notBefore / notAfter (RFC 8555 §7.4) -----------------------------------------------------------------

def rfc3339(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_not_before_and_not_after_within_limits(pki_server: PkiServer, root_certificate: x509.Certificate) -> None:
    acme = register(pki_server)
    name = unique_name()
    pki_server.dns.add_host(name)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    # In the future: the CA was made when the session started, and no certificate starts before its CA.
    not_before, not_after = now + datetime.timedelta(hours=1), now + datetime.timedelta(days=30)
    response = post(acme, acme.directory["newOrder"], {
        "identifiers": [{"type": "dns", "value": name}], "notBefore": rfc3339(not_before),
        "notAfter": rfc3339(not_after),
    })
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["notBefore"], body["notAfter"]) == (rfc3339(not_before), rfc3339(not_after))

    csr_pem, _key = make_csr_pem([name])
    orderr = messages.OrderResource(
        body=messages.Order.from_json(body), uri=response.headers["Location"], csr_pem=csr_pem,
        authorizations=[acme._authzr_from_response(post(acme, url), uri=url) for url in body["authorizations"]],
    )
    assert authorize(pki_server, acme, orderr)["status"] == "ready"
    _order, download = finalize(acme, orderr)
    leaf = check_chain(download.text, [name], root_certificate, at=not_before + datetime.timedelta(minutes=1))
    assert leaf.not_valid_before_utc == not_before
    assert leaf.not_valid_after_utc == not_after


@pytest.mark.parametrize("times", [
    {"notAfter": +400},  # longer than the profile's lifetime (365 days)
    {"notBefore": -3},  # more than a day in the past
    {"notBefore": +10, "notAfter": +5},  # ends before it starts
    {"notAfter": -1},  # in the past
    {"notAfter": +365 * 30},  # past the CA's own expiry
    {"notBefore": "tomorrow"},
    {"notAfter": "2030-01-01T00:00:00"},  # no time zone
    {"notAfter": 1893456000},
], ids=["too-long", "before-too-old", "inverted", "after-in-past", "past-ca", "not-a-date", "naive", "number"])
def test_not_before_and_not_after_beyond_limits(pki_server: PkiServer, times: dict[str, Any]) -> None:
    acme = register(pki_server)
    now = datetime.datetime.now(datetime.UTC)
    payload: dict[str, Any] = {"identifiers": [{"type": "dns", "value": unique_name()}]}
    for field, value in times.items():
        payload[field] = rfc3339(now + datetime.timedelta(days=value)) if isinstance(value, int) and abs(
            value) < 100000 else value
    before = table_counts(pki_server)
    assert_problem(post(acme, acme.directory["newOrder"], payload), 400, "malformed")
    assert table_counts(pki_server) == before


def test_not_before_earlier_than_the_cas_own_start_is_refused(pki_server: PkiServer) -> None:
    """§7.4: a certificate starting later than asked would have other contents than requested."""
    intermediate = x509.load_pem_x509_certificate(pki_server.manage("dump_ca", "intermediate").stdout.encode())
    acme = register(pki_server)
    before = table_counts(pki_server)
    response = post(acme, acme.directory["newOrder"], {
        "identifiers": [{"type": "dns", "value": unique_name()}],
        "notBefore": rfc3339(intermediate.not_valid_before_utc - datetime.timedelta(minutes=1)),
    })
    assert_problem(response, 400, "malformed")
    assert table_counts(pki_server) == before


# --- An EdDSA account through a whole order ----------------------------------------------------------------

def test_eddsa_account_gets_a_certificate(pki_server: PkiServer, root_certificate: x509.Certificate) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    raw = RawClient(pki_server, key)
    assert raw.new_account().status_code == 201
    name = unique_name()
    pki_server.dns.add_host(name)
    created = raw.post(raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
    assert created.status_code == 201, created.text
    order_url, order = created.headers["Location"], created.json()
    authz = raw.post(order["authorizations"][0]).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    # RFC 8555 §8.1: token "." base64url(RFC 7638 thumbprint of the account key), here an OKP key.
    pki_server.http01.tokens[challenge["token"]] = f"{challenge['token']}.{thumbprint(key)}"
    answered = raw.post(challenge["url"], {})
    assert answered.status_code == 200
    assert f'<{order["authorizations"][0]}>;rel="up"' in answered.headers["Link"]
    wait_for(lambda: raw.post(order_url).json()["status"], lambda s: s != "pending", "order")
    assert raw.post(order_url).json()["status"] == "ready"

    csr_pem, _csr_key = make_csr_pem([name])
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    finalized = raw.post(order["finalize"], {"csr": b64(csr_der)})
    assert finalized.status_code == 200, finalized.text
    valid = wait_for(lambda: raw.post(order_url).json(), lambda o: o["status"] != "processing", "order")
    assert valid["status"] == "valid", valid
    download = raw.post(valid["certificate"])
    assert download.headers["Content-Type"] == "application/pem-certificate-chain"
    check_chain(download.text, [name], root_certificate)


# --- Someone else's resources -----------------------------------------------------------------------------

def test_someone_elses_resources_are_unauthorized(pki_server: PkiServer) -> None:
    alice, mallory = register(pki_server), register(pki_server)
    name = unique_name()
    orderr, _certificate, _key = obtain(pki_server, alice, [name])
    pending, _key = new_order(pki_server, alice, [unique_name()])
    order = order_json(alice, orderr.uri)
    authz_url = order["authorizations"][0]
    challenge_url = post(alice, authz_url).json()["challenges"][0]["url"]
    pending_authz = pending.authorizations[0]
    pending_challenge = pending_authz.body.challenges[0].uri
    csr = x509.load_pem_x509_csr(make_csr_pem([name])[0])

    before = table_counts(pki_server)
    for url in (orderr.uri, authz_url, challenge_url, order["certificate"], pending.uri, pending_authz.uri,
                pending_challenge):
        assert_problem(post(mallory, url), 403, "unauthorized")
    assert_problem(post(mallory, pending_challenge, {}), 403, "unauthorized")
    assert_problem(post(mallory, pending_authz.uri, {"status": "deactivated"}), 403, "unauthorized")
    assert_problem(post(mallory, pending.body.finalize, messages.CertificateRequest(csr=csr).to_partial_json()),
                   403, "unauthorized")
    assert table_counts(pki_server) == before
    assert row(pki_server, "pki_acme_acmeauthorization", "status", pending_authz.uri) == ("pending",)
    assert row(pki_server, "pki_acme_acmechallenge", "status", pending_challenge) == ("pending",)
    assert row(pki_server, "pki_acme_acmeorder", "status", pending.uri) == ("pending",)

    # Resources that do not exist are 404, whoever asks.
    prefix = f"{pki_server.base_url}/acme/intermediate"
    for kind in ("order", "authz", "chall", "cert"):
        assert_problem(post(mallory, f"{prefix}/{kind}/nothing-here"), 404, "malformed")
