"""The scaled topology (issue 4): two ``serve --no-worker`` processes behind a balancer, two ``worker`` processes,
PostgreSQL and Redis (tests/scale/conftest.py sets it up).

- certbot gets a wildcard certificate with DNS-01, its requests alternating between the web processes;
- a worker killed with SIGKILL while it validates, or while it issues, holds a lease that runs out: the other
  worker's sweeper hands the work on and the order completes within the bound the lease gives; so does a web
  process killed while it validates a challenge its request started (web0; web1 runs ``--no-validation``);
- every process restarted in the middle of an order: the order is still there and completes;
- a CAA record naming another CA makes the challenge, authorization and order invalid with a ``caa`` problem.

Every wait is bounded; the module takes well under two minutes.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pki_server.acme import orders as acme_orders
from pki_server.acme import worker as acme_worker
from tests.acme import dnsserver
from tests.acme.rawclient import JOSE, PROBLEM, RawClient, make_csr, thumbprint, unique_name
from tests.scale.conftest import PG_PORT, VALIDATION_TIMEOUT, Topology, pid_of_tcp_client

pytestmark = [pytest.mark.scale, pytest.mark.postgres]

URN = "urn:ietf:params:acme:error:"
# orders.claim's lease on a challenge (worker.validate): the CAA check and the validation each get the timeout.
VALIDATION_LEASE = 2 * VALIDATION_TIMEOUT + 5
ISSUE_LEASE = acme_orders.ISSUE_LEASE.total_seconds()
SWEEP = acme_worker.SWEEP_INTERVAL
SLACK = 5.0  # a message hop, a validation on loopback, a poll interval
CERTBOT_TIMEOUT = 90

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, topology: Topology) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{topology.logs()}")
        time.sleep(0.05)


def client_for(topology: Topology) -> RawClient:
    client = RawClient(topology)  # type: ignore[arg-type]  # it needs only base_url
    client.register()
    return client


def post_via(topology: Topology, role: str, client: RawClient, url: str, payload: Any) -> httpx.Response:
    """``client.post(url, payload)`` sent straight to the web process ``role``, not through the balancer (the Host
    header is still the balancer's, as the signed url says)."""
    body = json.dumps(client.jws(client.protected(url), payload)).encode("utf-8")
    response = client.http.post(topology.web_url(role, url), content=body,
                                headers={"Content-Type": JOSE, "Host": urlsplit(topology.base_url).netloc})
    if "Replay-Nonce" in response.headers:
        client.nonce = response.headers["Replay-Nonce"]
    return response


def answer_http01(topology: Topology, client: RawClient, order: dict[str, Any], *, hold: bool = False,
                  via: str | None = None) -> tuple[str, dict[str, Any]]:
    """Answer the (only) authorization's HTTP-01 challenge; with ``hold`` the responder keeps the validator waiting;
    ``via``: the web process the challenge is posted to (web0 validates it itself, web1 sends it to a worker)."""
    (authz_url,) = order["authorizations"]
    authz = client.post(authz_url, None).json()
    topology.dns.add_host(authz["identifier"]["value"])
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    token = challenge["token"]
    topology.http01.tokens[token] = f"{token}.{thumbprint(client.key)}"
    if hold:
        topology.http01.hold(token)
    response = (client.post(challenge["url"], {}) if via is None
                else post_via(topology, via, client, challenge["url"], {}))
    assert response.status_code == 200, response.text
    return authz_url, challenge


def challenge_row(topology: Topology, token: str) -> tuple[int, str, datetime | None, datetime]:
    """(id, status, lease_until, the database's now) of a challenge."""
    ((pk, status, lease_until, now),) = topology.query(
        "SELECT id, status, lease_until, now() FROM pki_acme_acmechallenge WHERE token = %s", token)
    return pk, status, lease_until, now


def held_request_port(topology: Topology, token: str) -> int:
    """The client port of the first validation request for ``token`` that reached the responder."""
    return wait_for(lambda: next((port for t, port in topology.http01.requests if t == token), None),
                    10 + VALIDATION_TIMEOUT, "a worker's HTTP-01 request", topology)


def authz_status(client: RawClient, authz_url: str, statuses: tuple[str, ...]) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        authz = client.post(authz_url, None).json()
        return authz if authz["status"] in statuses else None
    return probe


def download(client: RawClient, order: dict[str, Any]) -> list[x509.Certificate]:
    response = client.post(order["certificate"], None)
    assert response.status_code == 200, response.text
    return x509.load_pem_x509_certificates(response.content)


def sans(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


def finalize_and_download(topology: Topology, client: RawClient, order_url: str, names: list[str],
                          timeout: float = 20) -> x509.Certificate:
    order = client.wait_order(order_url, ("ready",))
    response = client.finalize(order, make_csr(names))
    assert response.status_code == 200, response.text
    order = wait_for(lambda: (o := client.post(order_url, None).json())["status"] == "valid" and o,
                     timeout, f"order {order_url} valid", topology)
    leaf = download(client, order)[0]
    assert sans(leaf) == set(names)
    return leaf


def other_worker(topology: Topology, role: str) -> str:
    (survivor,) = [name for name in topology.running_workers() if name != role]
    return survivor


# --- certbot, DNS-01, a wildcard, through the balancer ----------------------------------------------------------

# certbot runs its hooks through a shell, with the domain and the value in CERTBOT_DOMAIN / CERTBOT_VALIDATION.
DNS_HOOK = Path(dnsserver.__file__)


def certbot_path() -> str:
    beside_python = Path(sys.executable).parent / "certbot"
    if not beside_python.exists():
        pytest.skip("certbot is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return str(beside_python)


def test_certbot_wildcard_dns01_across_both_web_processes(topology: Topology, tmp_path: Path) -> None:
    certbot = certbot_path()
    records = shlex.quote(str(topology.records_file))
    hook_command = f"{shlex.quote(sys.executable)} {shlex.quote(str(DNS_HOOK))} {records}"
    txt = '_acme-challenge."$CERTBOT_DOMAIN" "$CERTBOT_VALIDATION"'
    topology.balancer.reset_counts()
    command = [
        certbot, "certonly", "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", f"{hook_command} auth {txt}",
        "--manual-cleanup-hook", f"{hook_command} cleanup {txt}",
        "-d", "*.w.test.internal", "-d", "w.test.internal", "--cert-name", "scale", "--key-type", "ecdsa",
        "--server", topology.directory_url, "--config-dir", str(tmp_path / "config"),
        "--work-dir", str(tmp_path / "work"), "--logs-dir", str(tmp_path / "logs"),
        "--non-interactive", "--agree-tos", "-m", "admin@example.com",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=CERTBOT_TIMEOUT,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as ex:
        pytest.fail(f"certbot did not finish in {CERTBOT_TIMEOUT} s: {ex.stdout!r} {ex.stderr!r}\n{topology.logs()}")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{topology.logs()}"

    leaf = x509.load_pem_x509_certificate((tmp_path / "config" / "live" / "scale" / "cert.pem").read_bytes())
    assert sans(leaf) == {"*.w.test.internal", "w.test.internal"}
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    # The web processes ran without the CA keys: the workers issued.
    assert not [path for path in topology.web_dir.rglob("*") if path.suffix == ".key"]
    assert [path for path in topology.key_dir.rglob("*") if path.suffix == ".key"]

    # Both web processes answered, one request at a time in turn.
    counts, sequence = list(topology.balancer.counts), list(topology.balancer.sequence)
    assert min(counts) > 0, counts
    assert max(counts) - min(counts) <= 1, counts
    assert all(a != b for a, b in itertools.pairwise(sequence)), sequence
    assert sum(counts) >= 8, counts  # directory, nonce, account, order, 2 authz, 2 challenges, finalize, cert ...

    # Two TXT values at one name, both set by the hook and both asked for; then cleaned up.
    calls = (topology.records_file.parent / "dns-hook-calls.log").read_text().split("\n")
    auth_values = {line.split()[2] for line in calls if line.startswith("auth _acme-challenge.w.test.internal ")}
    cleaned = {line.split()[2] for line in calls if line.startswith("cleanup _acme-challenge.w.test.internal ")}
    assert len(auth_values) == 2 and cleaned == auth_values, calls
    assert json.loads(topology.records_file.read_text()) == {"_acme-challenge.w.test.internal": {"TXT": []}}
    assert ("_acme-challenge.w.test.internal", "TXT") in topology.dns.server.queries

    # The database holds what certbot got: two valid authorizations, one valid order with this certificate.
    serial = f"{leaf.serial_number:X}"
    rows = topology.query(
        "SELECT o.status, c.serial FROM pki_acme_acmeorder o JOIN pki_core_certificate c ON c.id = o.certificate_id "
        "WHERE o.identifiers::text LIKE %s", "%w.test.internal%")
    assert [(status, str(s).upper().lstrip("0")) for status, s in rows] == [("valid", serial.lstrip("0"))], rows
    authzs = topology.query("SELECT wildcard, status FROM pki_acme_acmeauthorization WHERE identifier = %s "
                            "ORDER BY wildcard", "w.test.internal")
    assert authzs == [(False, "valid"), (True, "valid")]


# --- finalize waits for the worker -------------------------------------------------------------------------------

def test_finalize_answers_with_the_certificate_a_worker_issued(topology: Topology) -> None:
    """The web process cannot sign: it hands the order to a worker and waits (worker.wait_issued) for its word on
    Redis, so the client gets the valid order from finalize itself, as from the embedded server, without polling."""
    client = client_for(topology)
    name = unique_name()
    order_url, order = client.new_order(name)
    answer_http01(topology, client, order)
    order = client.wait_order(order_url, ("ready",))
    response = client.finalize(order, make_csr([name]))
    assert response.status_code == 200, response.text
    finalized = response.json()
    assert finalized["status"] == "valid", (finalized, topology.logs())
    assert response.headers["Location"] == order_url and "Retry-After" not in response.headers
    assert sans(download(client, finalized)[0]) == {name}
    ((status, lease_until),) = topology.query("SELECT status, lease_until FROM pki_acme_acmeorder WHERE slug = %s",
                                              order_url.rpartition("/")[2])
    assert (status, lease_until) == ("valid", None)


# --- a worker killed with SIGKILL while it validates ---------------------------------------------------------------

def test_worker_killed_mid_validation(topology: Topology) -> None:
    client = client_for(topology)
    name = unique_name()
    order_url, order = client.new_order(name)
    authz_url, challenge = answer_http01(topology, client, order, hold=True, via="web1")  # web1: --no-validation
    token = challenge["token"]

    # A worker claimed the challenge and its request waits at the responder: the validation is in flight.
    port = held_request_port(topology, token)
    pk, status, lease_until, db_now = challenge_row(topology, token)
    assert status == "processing" and lease_until is not None and lease_until > db_now, (status, lease_until)
    holder = pid_of_tcp_client(port, topology.http01.port, topology.running_workers())
    assert holder is not None, "no worker process holds the validation's connection"
    survivor = other_worker(topology, holder)
    topology.kill(holder)
    killed = time.monotonic()
    assert challenge_row(topology, token)[1] == "processing"  # the dead worker wrote nothing

    # The validation can succeed now. The lease runs out, the survivor's sweeper re-dispatches, it validates.
    topology.http01.release(token)
    remaining_lease = (lease_until - db_now).total_seconds()
    bound = remaining_lease + SWEEP + SLACK
    authz = wait_for(authz_status(client, authz_url, ("valid", "invalid")), bound,
                     "the authorization after the worker's death", topology)
    elapsed = time.monotonic() - killed
    assert authz["status"] == "valid", authz
    assert elapsed >= remaining_lease - 1, "the work moved on before the dead worker's lease ended"
    assert f"Re-dispatching validate {pk}." in topology.log_path(survivor).read_text()
    assert sum(1 for t, _ in topology.http01.requests if t == token) >= 2

    finalize_and_download(topology, client, order_url, [name])
    topology.start(holder)  # back to two workers for the next tests


# --- a web process that validates the challenges it starts, killed with SIGKILL mid-validation ------------------

def test_web_process_validates_and_is_killed_mid_validation(topology: Topology) -> None:
    client = client_for(topology)
    name = unique_name()
    order_url, order = client.new_order(name)
    authz_url, challenge = answer_http01(topology, client, order, hold=True, via="web0")
    token = challenge["token"]

    # web0 claimed the challenge and validates it itself: its request waits at the responder, no worker's does.
    port = held_request_port(topology, token)
    pk, status, lease_until, db_now = challenge_row(topology, token)
    assert status == "processing" and lease_until is not None and lease_until > db_now, (status, lease_until)
    assert pid_of_tcp_client(port, topology.http01.port, topology.running()) == "web0"
    topology.kill("web0")
    killed = time.monotonic()
    assert challenge_row(topology, token)[1] == "processing"  # the dead process wrote nothing

    # The lease runs out; a worker's sweeper hands the challenge on and that worker validates it.
    topology.http01.release(token)
    bound = (lease_until - db_now).total_seconds() + SWEEP + SLACK
    authz = wait_for(lambda: (a := post_via(topology, "web1", client, authz_url, None).json())["status"] != "pending"
                     and a, bound, "the authorization after web0's death", topology)
    assert authz["status"] == "valid", authz
    assert time.monotonic() - killed >= (lease_until - db_now).total_seconds() - 1
    assert any(f"Re-dispatching validate {pk}." in topology.log_path(role).read_text()
               for role in topology.running_workers())
    topology.start("web0")
    finalize_and_download(topology, client, order_url, [name])


# --- a worker killed with SIGKILL while it issues ------------------------------------------------------------------

def test_worker_killed_mid_issuance(topology: Topology) -> None:
    """Issuance is held inside the worker's transaction by a table lock the test takes on the certificates: the
    worker has claimed the order, opened its transaction and waits to insert the certificate when it dies."""
    client = client_for(topology)
    name = unique_name()
    order_url, order = client.new_order(name)
    answer_http01(topology, client, order)
    order = client.wait_order(order_url, ("ready",))

    lock = topology.connect()
    try:
        lock.execute("LOCK TABLE pki_core_certificate IN EXCLUSIVE MODE")
        response = client.finalize(order, make_csr([name]))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "processing"

        def waiting_backend() -> int | None:
            rows = topology.query("SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock'")
            return rows[0][0] if len(rows) == 1 else None

        port = wait_for(waiting_backend, 10, "a worker waiting to write the certificate", topology)
        ((pk, status, lease_until, db_now),) = topology.query(
            "SELECT id, status, lease_until, now() FROM pki_acme_acmeorder WHERE slug = %s",
            order_url.rpartition("/")[2])
        assert status == "processing" and lease_until is not None and lease_until > db_now, (status, lease_until)
        holder = pid_of_tcp_client(port, PG_PORT, topology.running_workers())
        assert holder is not None, "no worker process holds the waiting database connection"
        survivor = other_worker(topology, holder)
        topology.kill(holder)
        killed = time.monotonic()
    finally:
        lock.rollback()
        lock.close()

    remaining_lease = (lease_until - db_now).total_seconds()
    bound = remaining_lease + SWEEP + SLACK
    order = wait_for(lambda: (o := client.post(order_url, None).json())["status"] != "processing" and o, bound,
                     "the order after the issuing worker's death", topology)
    assert order["status"] == "valid", order
    assert time.monotonic() - killed >= remaining_lease - 1
    assert f"Re-dispatching issue {pk}." in topology.log_path(survivor).read_text()
    leaf = download(client, order)[0]
    assert sans(leaf) == {name}
    # The dead worker's transaction left nothing behind: one certificate for the name, the one the order names.
    rows = topology.query("SELECT c.serial FROM pki_core_certificate c WHERE c.sans LIKE %s", f"%{name}%")
    assert len(rows) == 1, rows
    assert int(rows[0][0], 16) == leaf.serial_number
    topology.start(holder)


# --- every process restarted in the middle of an order ----------------------------------------------------------

def test_restart_everything_mid_order(topology: Topology) -> None:
    client = client_for(topology)
    name = unique_name()
    order_url, order = client.new_order(name)
    authz_url, challenge = answer_http01(topology, client, order, hold=True)
    token = challenge["token"]
    held_request_port(topology, token)
    assert challenge_row(topology, token)[1] == "processing"

    topology.stop()  # SIGTERM to all four, as a service manager does
    pk, status, lease_until, db_now = challenge_row(topology, token)
    assert status == "processing" and lease_until is not None, status  # not lost, not failed by the shutdown
    ((order_status,),) = topology.query("SELECT status FROM pki_acme_acmeorder WHERE slug = %s",
                                        order_url.rpartition("/")[2])
    assert order_status == "pending"
    with pytest.raises(httpx.HTTPError):
        httpx.get(topology.directory_url, timeout=2)

    topology.http01.release(token)
    topology.start()
    # The client goes on with the nonce of the last response before the restart (shared secret, Redis).
    assert client.nonce is not None
    # The restarted workers' sweepers hand the challenge on once the lease taken before the restart ends.
    bound = max(0.0, (lease_until - db_now).total_seconds()) + SWEEP + SLACK
    authz = wait_for(authz_status(client, authz_url, ("valid", "invalid")), bound,
                     "the authorization after the restart", topology)
    assert authz["status"] == "valid", authz
    assert any(f"Re-dispatching validate {pk}." in topology.log_path(role).read_text()
               for role in ("worker0", "worker1"))
    finalize_and_download(topology, client, order_url, [name])


# --- CAA naming another CA ---------------------------------------------------------------------------------------

def test_caa_naming_another_ca(topology: Topology) -> None:
    client = client_for(topology)
    name = unique_name()
    topology.dns.server.records[(name, "CAA")] = ['0 issue "other-ca.example"']
    order_url, order = client.new_order(name)
    authz_url, challenge = answer_http01(topology, client, order)
    authz = wait_for(authz_status(client, authz_url, ("valid", "invalid")), VALIDATION_LEASE + SLACK,
                     "the authorization under CAA", topology)
    assert authz["status"] == "invalid", authz
    (failed,) = [c for c in authz["challenges"] if c["url"] == challenge["url"]]
    assert failed["status"] == "invalid"
    assert failed["error"]["type"] == URN + "caa", failed
    assert '0 issue "other-ca.example"' in failed["error"]["detail"], failed
    assert not any(token == challenge["token"] for token, _ in topology.http01.requests), \
        "CAA refuses before the challenge is fetched"

    order = client.post(order_url, None).json()
    assert order["status"] == "invalid", order
    assert order["error"]["type"] == URN + "caa", order
    assert '0 issue "other-ca.example"' in order["error"]["detail"], order
    response = client.finalize(order, make_csr([name]))
    assert response.status_code == 403 and response.headers["Content-Type"] == PROBLEM, response.text
