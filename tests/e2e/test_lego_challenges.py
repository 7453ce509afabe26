"""lego (the Go client; Debian package `lego`) against `pki-server serve` with the other two challenge types:
TLS-ALPN-01 (RFC 8737; lego's own TLS listener on the server's PKI_ACME_TLSALPN01_PORT) and DNS-01 (RFC 8555
§8.4) for a wildcard and its base name, through lego's `exec` DNS provider writing into the test DNS responder.

The server is one of this module's own (tests/acme/server.py): the session's e2e server validates TLS-ALPN-01 on
443, and this one also serves its DNS records from a JSON file the exec script writes. Skipped when `lego` is not
on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.acme import dnsserver
from tests.acme.server import PkiServer, free_port, running_server
from tests.e2e.conftest import dns_names, load_chain, verify_chain

TIMEOUT = 180  # seconds for one lego command

LEGO = shutil.which("lego")
pytestmark = pytest.mark.skipif(LEGO is None, reason="lego is not on PATH (Debian: apt-get install lego)")

# lego's exec provider runs `EXEC_PATH present|cleanup <fqdn> <value>` (fqdn with the final dot); the records-file
# writer of tests/acme/dnsserver.py takes exactly that. Both the wildcard and its base name put a TXT value at
# _acme-challenge.<name>: the records file keeps a list of values per name.
DNS_HOOK = Path(dnsserver.__file__)


@dataclass
class ChallengeServer:
    server: PkiServer
    tlsalpn01_port: int  # the server's PKI_ACME_TLSALPN01_PORT, where lego --tls listens
    records_file: Path  # the DNS responder also answers from this file
    root: x509.Certificate


@pytest.fixture(scope="module")
def challenge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallengeServer]:
    data_dir = tmp_path_factory.mktemp("e2e-challenges")
    port = free_port()
    with running_server(data_dir, extra_env={"PKI_ACME_TLSALPN01_PORT": str(port)}) as server:
        records_file = data_dir / "dns-records.json"
        server.dns.server.records_file = records_file
        root_pem = server.manage("dump_ca", "root").stdout.encode("ascii")
        yield ChallengeServer(server, port, records_file, x509.load_pem_x509_certificate(root_pem))


def lego(server: ChallengeServer, path: Path, names: list[str], *args: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert LEGO is not None
    domains = [arg for name in names for arg in ("--domains", name)]
    command = [LEGO, "--server", server.server.directory_url, "--path", str(path), "--email", "test@example.com",
               "--accept-tos", *domains, *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"lego did not finish in {TIMEOUT} s\n{timeout.stdout!r}\n{timeout.stderr!r}\n"
                    f"server log:\n{server.server.log_path.read_text()[-3000:]}")
    assert result.returncode == 0, (
        f"lego {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
        f"server log:\n{server.server.log_path.read_text()[-3000:]}"
    )
    return result


def challenges_of(server: PkiServer, cert: x509.Certificate) -> list[tuple[str, int, str, str, str]]:
    """(identifier, wildcard, authorization status, challenge type, challenge status) of every challenge of the
    authorizations of the order that got ``cert``, sorted."""
    rows = server.query(
        "SELECT a.identifier, a.wildcard, a.status, ch.type, ch.status FROM pki_core_certificate c "
        "JOIN pki_acme_acmeorder o ON o.certificate_id = c.id "
        "JOIN pki_acme_acmeorder_authorizations oa ON oa.acmeorder_id = o.id "
        "JOIN pki_acme_acmeauthorization a ON a.id = oa.acmeauthorization_id "
        "JOIN pki_acme_acmechallenge ch ON ch.authorization_id = a.id "
        "WHERE c.serial = ? AND o.status = 'valid'",
        f"{cert.serial_number:X}",
    )
    return sorted((str(i), int(w), str(a), str(t), str(s)) for i, w, a, t, s in rows)


def test_lego_tls_alpn_01(challenge_server: ChallengeServer, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    names = [f"alpn{index}.{run}.test.internal" for index in range(2)]
    for name in names:
        challenge_server.server.dns.add_host(name)

    lego(challenge_server, tmp_path / "lego", names, "--key-type", "ec256",
         "--tls", "--tls.port", f"127.0.0.1:{challenge_server.tlsalpn01_port}", "run")

    leaf, *chain = load_chain(tmp_path / "lego" / "certificates" / f"{names[0]}.crt")
    assert dns_names(leaf) == set(names)
    verify_chain(challenge_server.root, leaf, chain, names)
    # Every authorization was proved by tls-alpn-01; the other challenges offered stayed pending.
    rows = challenges_of(challenge_server.server, leaf)
    assert {row[0] for row in rows} == set(names)
    valid = [(identifier, wildcard, authz, kind) for identifier, wildcard, authz, kind, status in rows
             if status == "valid"]
    assert sorted(valid) == [(name, 0, "valid", "tls-alpn-01") for name in sorted(names)], rows
    assert all(status == "pending" for *_, status in rows if status != "valid"), rows


def test_lego_dns_01_wildcard(challenge_server: ChallengeServer, tmp_path: Path) -> None:
    base = "x.test.internal"
    names = [f"*.{base}", base]
    # EXEC_PATH is run directly (no shell): a wrapper that calls this interpreter with the records file.
    wrapper = tmp_path / "exec.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{DNS_HOOK}" "{challenge_server.records_file}" "$@"\n')
    wrapper.chmod(0o755)
    host, port = challenge_server.server.dns.server.address
    # The exec provider solves one authorization at a time and waits EXEC_SEQUENCE_INTERVAL (60 s by default)
    # between them, so the two values are not published at once here (tests/scale's certbot run does that).
    env = {"EXEC_PATH": str(wrapper), "EXEC_PROPAGATION_TIMEOUT": "30", "EXEC_POLLING_INTERVAL": "1",
           "EXEC_SEQUENCE_INTERVAL": "1"}

    # --dns.resolvers and --dns.disable-cp: lego's own propagation check asks the test responder only.
    lego(challenge_server, tmp_path / "lego", names, "--key-type", "ec256", "--dns", "exec",
         "--dns.resolvers", f"{host}:{port}", "--dns.disable-cp", "run", env=env)

    # lego names the files after the first domain, with "*" as "_".
    leaf, *chain = load_chain(tmp_path / "lego" / "certificates" / f"_.{base}.crt")
    assert dns_names(leaf) == set(names)
    verify_chain(challenge_server.root, leaf, chain, [f"host.{base}", base])
    # One authorization per name, both proved by dns-01; the wildcard's was offered dns-01 only (RFC 8555 §7.1.3).
    rows = challenges_of(challenge_server.server, leaf)
    assert [row for row in rows if row[4] == "valid"] == [
        (base, 0, "valid", "dns-01", "valid"), (base, 1, "valid", "dns-01", "valid")], rows
    assert [row[3] for row in rows if row[1] == 1] == ["dns-01"], rows

    # Both values were published at the one name, asked for by the server, and cleaned up afterwards.
    calls = (challenge_server.records_file.parent / "dns-hook-calls.log").read_text().splitlines()
    presented = {line.split()[2] for line in calls if line.startswith(f"present _acme-challenge.{base} ")}
    cleaned = {line.split()[2] for line in calls if line.startswith(f"cleanup _acme-challenge.{base} ")}
    assert len(presented) == 2 and cleaned == presented, calls
    assert json.loads(challenge_server.records_file.read_text()) == {f"_acme-challenge.{base}": {"TXT": []}}
    assert (f"_acme-challenge.{base}", "TXT") in challenge_server.server.dns.server.queries
