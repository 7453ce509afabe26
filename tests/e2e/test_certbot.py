"""certbot (from PyPI) against `pki-server serve`: issue for several names with HTTP-01
(--standalone on the server's PKI_ACME_HTTP01_PORT), renew, revoke, update and deactivate the account.

certbot talks plain HTTP to the directory URL it is given (it has no https-only rule for --server).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import E2EServer, dns_names, load_chain, verify_chain

TIMEOUT = 180  # seconds for one certbot command; a whole issuance takes ~2 s on loopback


def certbot_path() -> str:
    beside_python = Path(sys.executable).parent / "certbot"
    found = str(beside_python) if beside_python.exists() else shutil.which("certbot")
    if found is None:
        pytest.skip("certbot is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return found


class Certbot:
    def __init__(self, server: E2EServer, root: Path) -> None:
        self.server = server
        self.config_dir = root / "config"
        self.executable = certbot_path()
        self.dirs = ["--config-dir", str(self.config_dir), "--work-dir", str(root / "work"),
                     "--logs-dir", str(root / "logs")]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.executable, *args, *self.dirs, "--non-interactive", "--server", self.server.directory_url]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(f"certbot {args[0]} did not finish in {TIMEOUT} s\n{timeout.stdout!r}\n{timeout.stderr!r}\n"
                        f"server log:\n{self.server.server.log_path.read_text()[-3000:]}")
        assert result.returncode == 0, (
            f"certbot {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
            f"server log:\n{self.server.server.log_path.read_text()[-3000:]}"
        )
        return result

    def account_slug(self) -> str:
        (regr,) = self.config_dir.glob("accounts/**/regr.json")
        uri = json.loads(regr.read_text())["uri"]
        assert uri.startswith(f"{self.server.server.base_url}/acme/intermediate/acct/"), uri
        return str(uri).rpartition("/")[2]

    def account(self, slug: str | None = None) -> tuple[list[str], str]:
        """(contact, status) of the server's row for certbot's account."""
        (row,) = self.server.server.query("SELECT contact, status FROM pki_acme_acmeaccount WHERE slug = ?",
                                          slug or self.account_slug())
        return json.loads(row[0]), str(row[1])


def test_certbot_issue_renew_revoke(e2e_server: E2EServer, tmp_path: Path) -> None:
    certbot = Certbot(e2e_server, tmp_path)
    names = e2e_server.names(3)
    domains = [arg for name in names for arg in ("-d", name)]
    standalone = ["--standalone", "--http-01-port", str(e2e_server.challenge_port), "--http-01-address", "127.0.0.1"]

    certbot("certonly", *standalone, "--agree-tos", "-m", "test@example.com", "--cert-name", "e2e", *domains)

    live = certbot.config_dir / "live" / "e2e"
    (leaf,) = load_chain(live / "cert.pem")
    chain = load_chain(live / "chain.pem")
    assert load_chain(live / "fullchain.pem") == [leaf, *chain]
    assert dns_names(leaf) == set(names)
    verify_chain(e2e_server.root, leaf, chain, names)
    assert e2e_server.certificate_row(leaf)[1:] == (0, "")
    assert certbot.account() == (["mailto:test@example.com"], "valid")

    # Renewal: certbot replays the lineage's saved settings (standalone, port, server). Without a
    # terminal certbot would first sleep up to 8 minutes.
    certbot("renew", "--cert-name", "e2e", "--force-renewal", "--no-random-sleep-on-renew")
    (renewed,) = load_chain(live / "cert.pem")
    assert renewed.serial_number != leaf.serial_number
    assert dns_names(renewed) == set(names)
    verify_chain(e2e_server.root, renewed, load_chain(live / "chain.pem"), names)
    assert e2e_server.certificate_row(renewed)[1:] == (0, "")

    # Revocation by the account that ordered it (RFC 8555 §7.6), with a reason code.
    certbot("revoke", "--cert-path", str(live / "cert.pem"), "--reason", "keycompromise", "--no-delete-after-revoke")
    assert e2e_server.certificate_row(renewed)[1:] == (1, "key_compromise")
    assert e2e_server.certificate_row(leaf)[1:] == (0, ""), "revoking the renewed certificate touched the first one"

    # The account: new contact (§7.3.2), then deactivation (§7.3.6).
    slug = certbot.account_slug()
    certbot("update_account", "-m", "other@example.com")
    assert certbot.account(slug) == (["mailto:other@example.com"], "valid")
    certbot("unregister")  # certbot then forgets the account locally; the server keeps it, deactivated
    assert certbot.account(slug) == (["mailto:other@example.com"], "deactivated")

    # Revocation signed by the certificate's own key (§7.6), which needs no account at all.
    archive = certbot.config_dir / "archive" / "e2e"
    assert load_chain(archive / "cert1.pem") == [leaf]
    certbot("revoke", "--cert-path", str(archive / "cert1.pem"), "--key-path", str(archive / "privkey1.pem"),
            "--reason", "superseded", "--no-delete-after-revoke")
    assert e2e_server.certificate_row(leaf)[1:] == (1, "superseded")
