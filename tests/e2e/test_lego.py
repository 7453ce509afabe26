"""lego (the Go client; Debian package `lego`) against `pki-server serve`: issue for several
names with HTTP-01 (its own listener on the server's PKI_ACME_HTTP01_PORT), renew, revoke.

lego accepts a plain-http directory URL. Skipped when `lego` is not on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.e2e.conftest import E2EServer, dns_names, load_chain, verify_chain

TIMEOUT = 180  # seconds for one lego command

LEGO = shutil.which("lego")
pytestmark = pytest.mark.skipif(LEGO is None, reason="lego is not on PATH (Debian: apt-get install lego)")


class Lego:
    def __init__(self, server: E2EServer, path: Path) -> None:
        assert LEGO is not None
        self.server = server
        self.path = path
        self.common = [
            "--server", server.directory_url, "--path", str(path), "--email", "test@example.com", "--accept-tos",
            "--http", "--http.port", f"127.0.0.1:{server.challenge_port}",
        ]

    def __call__(self, names: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        assert LEGO is not None
        domains = [arg for name in names for arg in ("--domains", name)]
        try:
            result = subprocess.run([LEGO, *self.common, *domains, *args], capture_output=True, text=True,
                                    timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(f"lego {args[0]} did not finish in {TIMEOUT} s\n{timeout.stdout!r}\n{timeout.stderr!r}\n"
                        f"server log:\n{self.server.server.log_path.read_text()[-3000:]}")
        assert result.returncode == 0, (
            f"lego {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
            f"server log:\n{self.server.server.log_path.read_text()[-3000:]}"
        )
        return result

    def account(self) -> tuple[str, dict[str, str]]:
        """(status, public JWK) of the server's row for lego's account."""
        (account,) = self.path.glob("accounts/*/*/account.json")
        uri = json.loads(account.read_text())["registration"]["uri"]
        (row,) = self.server.server.query("SELECT status, jwk FROM pki_acme_acmeaccount WHERE slug = ?",
                                          str(uri).rpartition("/")[2])
        return str(row[0]), json.loads(row[1])


def test_lego_issue_renew_revoke(e2e_server: E2EServer, tmp_path: Path) -> None:
    names = e2e_server.names(3)
    lego = Lego(e2e_server, tmp_path / "lego")
    certificates = tmp_path / "lego" / "certificates"

    # lego makes its account key of --key-type too: a P-384 account key (ES384) and certificate key.
    lego(names, "--key-type", "ec384", "run")
    leaf, *chain = load_chain(certificates / f"{names[0]}.crt")  # lego saves leaf + chain
    assert chain == load_chain(certificates / f"{names[0]}.issuer.crt")
    assert dns_names(leaf) == set(names)
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey) and leaf_key.curve.name == "secp384r1"
    verify_chain(e2e_server.root, leaf, chain, names)
    assert e2e_server.certificate_row(leaf)[1:] == (0, "")
    status, jwk = lego.account()
    assert (status, jwk["kty"], jwk["crv"]) == ("valid", "EC", "P-384")

    # --days 400 is more than the certificate's lifetime, so lego renews now, with a new RSA key
    # (the account key stays P-384). The authorizations are still valid: no new challenge.
    lego(names, "--key-type", "rsa2048", "renew", "--days", "400", "--no-random-sleep")
    renewed, *chain = load_chain(certificates / f"{names[0]}.crt")
    assert renewed.serial_number != leaf.serial_number
    assert isinstance(renewed.public_key(), rsa.RSAPublicKey)
    placeholders = ", ".join("?" * len(names))
    authorizations = e2e_server.server.query(
        f"SELECT COUNT(*) FROM pki_acme_acmeauthorization WHERE identifier IN ({placeholders})", *names
    )
    assert authorizations == [(len(names),)], "the renewal did not reuse the valid authorizations"
    assert dns_names(renewed) == set(names)
    verify_chain(e2e_server.root, renewed, chain, names)

    # lego revokes with the account key (RFC 8555 §7.6); 1 is keyCompromise (RFC 5280 §5.3.1). It
    # finds the certificate by its first name (each --domains would name a certificate file).
    lego(names[:1], "revoke", "--reason", "1")
    assert e2e_server.certificate_row(renewed)[1:] == (1, "key_compromise")
    assert e2e_server.certificate_row(leaf)[1:] == (0, "")
