"""Real ACME clients against a real `pki-server serve` (tests/acme/server.py).

The server gets a challenge port of its own (``PKI_ACME_HTTP01_PORT``) on which the *client*
answers HTTP-01 (certbot --standalone, lego --http), so the test HTTP-01 responder of
:class:`~tests.acme.server.PkiServer` stays on its own, unused port. Names resolve to 127.0.0.1
through the server's test DNS responder; clients reach the server by its directory URL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.acme.server import PkiServer, free_port, running_server


@dataclass
class E2EServer:
    server: PkiServer
    challenge_port: int  # the server's PKI_ACME_HTTP01_PORT, where the client under test listens
    root: x509.Certificate

    @property
    def directory_url(self) -> str:
        return self.server.directory_url

    def names(self, count: int) -> list[str]:
        """``count`` fresh DNS names that resolve to 127.0.0.1 for the server's validator."""
        run = uuid.uuid4().hex[:10]
        names = [f"host{index}.{run}.test.internal" for index in range(count)]
        for name in names:
            self.server.dns.add_host(name)
        return names

    def certificate_row(self, cert: x509.Certificate) -> tuple[str, int, str]:
        """(serial, revoked, revoked_reason) of the server's row for ``cert``."""
        rows = self.server.query(
            "SELECT serial, revoked, revoked_reason FROM pki_core_certificate WHERE serial = ?",
            f"{cert.serial_number:X}",
        )
        assert len(rows) == 1, f"the server has no row for serial {cert.serial_number:X}"
        serial, revoked, reason = rows[0]
        return str(serial), int(revoked), str(reason)


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EServer]:
    data_dir = tmp_path_factory.mktemp("e2e-server")
    challenge_port = free_port()
    with running_server(data_dir, extra_env={"PKI_ACME_HTTP01_PORT": str(challenge_port)}) as server:
        root_pem = server.manage("dump_ca", "root").stdout.encode("ascii")
        yield E2EServer(server, challenge_port, x509.load_pem_x509_certificate(root_pem))


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def dns_names(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


def verify_chain(root: x509.Certificate, leaf: x509.Certificate, intermediates: list[x509.Certificate],
                 names: list[str]) -> None:
    """Path validation (RFC 5280, as a TLS client does it) from ``leaf`` to ``root`` for every name."""
    store = Store([root])
    for name in names:
        verifier = PolicyBuilder().store(store).time(datetime.now(UTC)).build_server_verifier(x509.DNSName(name))
        chain = verifier.verify(leaf, intermediates)
        assert chain[0] == leaf and chain[-1] == root
