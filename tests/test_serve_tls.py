"""`pki-server serve --tls`: HTTPS with a certificate the server issues from its own CA, and renews.

Every test starts a real `pki-server serve` subprocess on loopback with its own data directory,
and talks to it over real TLS with the root CA from `pki-server dump_ca root` as the only trust
anchor: hostname verification is the standard library's.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme.server import PkiServer, free_port


class TlsServer(PkiServer):
    """PkiServer (DNS and HTTP-01 responders, the server's database) started with --tls."""

    def __init__(self, data_dir: Path, *serve_args: str, **kwargs: object) -> None:
        super().__init__(data_dir, **kwargs)  # type: ignore[arg-type]
        self.tls_port = free_port()
        self.serve_args = serve_args
        self.root_pem = data_dir / "root.pem"
        self.tls_dir = data_dir / "tls"
        self.initialised = self.responding = False

    def init(self) -> None:
        """`pki-server init` and the root CA's certificate; the responders run from now on (the
        server's environment names the DNS responder), until :meth:`stop`."""
        if not self.responding:
            self.dns.start()
            self.http01.start()
            self.responding = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.manage("init")
        self.root_pem.write_text(self.manage("dump_ca", "root").stdout)
        self.initialised = True

    def serve_command(self) -> list[str]:
        return [sys.executable, "-m", "pki_server", "serve", "--port", str(self.port), "--tls",
                "--tls-port", str(self.tls_port), *self.serve_args]

    def start(self) -> None:
        if not self.initialised:
            self.init()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.serve_command(), env=self.env, cwd=self.data_dir, stdout=log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pki-server serve exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                self.peer_certificate("localhost")
                return
            time.sleep(0.1)
        raise RuntimeError(f"pki-server serve --tls did not answer in 30 s: {self.log_path.read_text()[-3000:]}")

    def restart(self) -> None:
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(timeout=15) == 0, self.log_path.read_text()[-3000:]
        self.start()

    def client_context(self) -> ssl.SSLContext:
        """Trusts the server's root CA and nothing else; verifies host names."""
        context = ssl.create_default_context(cafile=str(self.root_pem))
        assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
        return context

    @contextlib.contextmanager
    def tls_connection(self, server_hostname: str) -> Iterator[ssl.SSLSocket]:
        """A verified TLS connection to the HTTPS port, as a client of ``server_hostname``."""
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        with self.client_context().wrap_socket(raw, server_hostname=server_hostname) as conn:
            yield conn

    def peer_certificate(self, server_hostname: str) -> x509.Certificate:
        with self.tls_connection(server_hostname) as conn:
            der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def get(self, server_hostname: str, path: str) -> tuple[int, bytes]:
        """GET ``path`` over HTTPS with Host: ``server_hostname``:port (HTTP/1.0, read to the end)."""
        host = f"[{server_hostname}]" if ":" in server_hostname else server_hostname
        with self.tls_connection(server_hostname) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{self.tls_port}\r\n\r\n".encode())
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def serial_row(self, certificate: x509.Certificate) -> tuple[str, str, str, int]:
        serial = f"{certificate.serial_number:X}"
        rows = self.query(
            "SELECT c.profile, ca.name, c.sans, c.revoked FROM pki_core_certificate c "
            "JOIN pki_core_certificateauthority ca ON ca.id = c.ca_id WHERE c.serial = ?", serial,
        )
        assert len(rows) == 1, f"certificate {serial} is not a Certificate row"
        return rows[0]  # type: ignore[return-value]


@contextlib.contextmanager
def tls_server(data_dir: Path, *serve_args: str) -> Iterator[TlsServer]:
    server = TlsServer(data_dir, *serve_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(tmp_path_factory.mktemp("tls"), "--tls-name", "pki.test.internal",
                    "--tls-name", "192.0.2.10") as running:
        yield running


def san_strings(certificate: x509.Certificate) -> set[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1", "pki.test.internal", "192.0.2.10"])
def test_hostname_verification_succeeds_for_every_name(server: TlsServer, name: str) -> None:
    certificate = server.peer_certificate(name)
    assert san_strings(certificate) == {"127.0.0.1", "::1", "localhost", "pki.test.internal", "192.0.2.10"}


def test_hostname_verification_fails_for_other_names(server: TlsServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        server.peer_certificate("other.test.internal")


def test_untrusted_without_the_root(server: TlsServer) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://localhost:{server.tls_port}/acme/directory", verify=ssl.create_default_context())


def test_acme_directory_over_https_and_http(server: TlsServer) -> None:
    https = httpx.get(f"https://localhost:{server.tls_port}/acme/directory", verify=server.client_context())
    assert https.status_code == 200
    assert https.json()["newNonce"] == f"https://localhost:{server.tls_port}/acme/intermediate/new-nonce"
    plain = httpx.get(f"http://127.0.0.1:{server.port}/acme/directory")
    assert plain.status_code == 200
    assert plain.json()["newNonce"] == f"http://127.0.0.1:{server.port}/acme/intermediate/new-nonce"
    # A --tls-name is a host the server answers to (it is added to the allowed hosts).
    status, body = server.get("pki.test.internal", "/acme/directory")
    assert status == 200
    assert f"https://pki.test.internal:{server.tls_port}/acme/intermediate/new-order".encode() in body


def test_the_certificate_is_a_certificate_row_and_files(server: TlsServer) -> None:
    certificate = server.peer_certificate("localhost")
    profile, ca_name, sans, revoked = server.serial_row(certificate)
    assert (profile, ca_name, revoked) == ("webserver", "intermediate", 0)
    assert "DNS:pki.test.internal" in sans.split(",")

    tls = server.tls_dir
    assert stat.S_IMODE((tls / "key.pem").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((tls / "key.pem").read_bytes(), password=None)
    assert key.public_key() == certificate.public_key()
    assert key.curve.name == "secp256r1"  # type: ignore[union-attr]
    chain = x509.load_pem_x509_certificates((tls / "fullchain.pem").read_bytes())
    assert chain[0] == certificate
    assert x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes()) == certificate
    assert x509.load_pem_x509_certificates((tls / "chain.pem").read_bytes()) == chain[1:]
    assert [c.subject.rfc4514_string() for c in chain[1:]] == ["CN=pki-server Intermediate CA"]


def test_restart_reuses_a_valid_certificate(tmp_path: Path) -> None:
    with tls_server(tmp_path) as server:
        first = server.peer_certificate("localhost")
        server.restart()
        assert server.peer_certificate("localhost") == first
        assert server.count("pki_core_certificate") == 1


def test_a_revoked_or_renamed_certificate_is_replaced_at_start(tmp_path: Path) -> None:
    with tls_server(tmp_path) as server:
        first = server.peer_certificate("localhost")
        server.manage("revoke_cert", f"{first.serial_number:X}")
        server.restart()
        second = server.peer_certificate("localhost")
        assert second.serial_number != first.serial_number
        assert server.serial_row(second)[3] == 0

        server.serve_args = ("--tls-name", "extra.test.internal")
        server.restart()
        third = server.peer_certificate("extra.test.internal")
        assert third.serial_number != second.serial_number
        assert server.count("pki_core_certificate") == 3


def test_the_periodic_check_renews_a_short_lived_certificate(tmp_path: Path) -> None:
    # A 10 s lifetime is due for renewal about 6 s after issuance (a third of it left).
    with tls_server(tmp_path, "--tls-lifetime", "10s", "--tls-check-interval", "0.5") as server:
        first = server.peer_certificate("localhost")
        lifetime = first.not_valid_after_utc - first.not_valid_before_utc
        assert lifetime.total_seconds() == pytest.approx(11, abs=1)
        deadline = time.monotonic() + 20
        renewed = first
        while renewed == first and time.monotonic() < deadline:
            time.sleep(0.25)
            renewed = server.peer_certificate("localhost")
        assert renewed != first, "the certificate was not renewed within 20 s"
        assert server.serial_row(first)[3] == 0 and server.serial_row(renewed)[0] == "webserver"
        # The new key too: the renewal loaded a new pair into the running server.
        assert renewed.public_key() != first.public_key()
        status, _ = server.get("localhost", "/acme/directory")
        assert status == 200
        assert server.process is not None and server.process.poll() is None


def test_an_operator_pair_is_served_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    server = TlsServer(tmp_path)
    cert_file, key_file = tmp_path / "own.pem", tmp_path / "own.key"

    def sign() -> x509.Certificate:
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key_file), "-out", str(tmp_path / "own.csr"), "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
        server.manage("sign_cert", "--ca", "intermediate", "--csr", str(tmp_path / "own.csr"), "--bundle",
                      "--out", str(cert_file), "--force")
        return x509.load_pem_x509_certificates(cert_file.read_bytes())[0]

    try:
        server.init()
        own = sign()
        server.serve_args = ("--tls-cert", str(cert_file), "--tls-key", str(key_file), "--tls-check-interval", "0.5")
        server.start()
        assert server.peer_certificate("localhost") == own
        assert server.count("pki_core_certificate") == 1  # nothing issued by the server itself
        time.sleep(1.1)  # a later modification time, whatever the file system's resolution
        other = sign()
        deadline = time.monotonic() + 10
        while server.peer_certificate("localhost") != other and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.peer_certificate("localhost") == other
    finally:
        server.stop()


def run_serve(server: TlsServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*server.serve_command(), *args], env=server.env, cwd=server.data_dir,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def stopped_server(tmp_path: Path) -> Iterator[TlsServer]:
    """Initialised, not serving."""
    server = TlsServer(tmp_path)
    try:
        server.init()
        yield server
    finally:
        server.stop()


def test_errors_are_one_line_and_write_nothing(stopped_server: TlsServer) -> None:
    server = stopped_server

    def refused(*args: str) -> str:
        result = run_serve(server, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("CommandError: "), result.stderr
        assert server.count("pki_core_certificate") == 0
        assert not server.tls_dir.exists()
        return lines[0]

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", server.tls_port))
        busy.listen()
        assert f"port {server.tls_port} (--tls-port): Address already in use" in refused()
    assert "no CA named 'nope'" in refused("--tls-ca", "nope")
    assert "--no-validation goes with --no-worker" in refused("--no-validation")
    assert "not a duration" in refused("--tls-lifetime", "soon")
    assert "--tls-name" in refused("--tls-name", "not a name")
    server.manage("init_ca", "locked", "/CN=Locked", "--curve", "P-256", "--password", "secret", "--parent", "root")
    assert "needs a password" in refused("--tls-ca", "locked")
    server.manage("edit_ca", "intermediate", "--no-acme")
    assert "no CA has ACME enabled" in refused()


def test_certbot_over_https_trusting_the_root(tmp_path: Path) -> None:
    """docs/acme.md's recipe: certbot against the HTTPS directory, with REQUESTS_CA_BUNDLE."""
    certbot = Path(sys.executable).parent / "certbot"
    if not certbot.exists():
        pytest.skip("certbot is not installed (it is in the dev extra)")
    challenge_port = free_port()
    server = TlsServer(tmp_path / "server", extra_env={"PKI_ACME_HTTP01_PORT": str(challenge_port)})
    name = "certbot-tls.test.internal"
    try:
        server.start()
        server.dns.add_host(name)
        env = {**server.env, "REQUESTS_CA_BUNDLE": str(server.root_pem)}
        result = subprocess.run(
            [str(certbot), "certonly", "--standalone", "--http-01-port", str(challenge_port),
             "--http-01-address", "127.0.0.1", "--server", f"https://localhost:{server.tls_port}/acme/directory",
             "--non-interactive", "--agree-tos", "--register-unsafely-without-email", "-d", name,
             "--config-dir", str(tmp_path / "config"), "--work-dir", str(tmp_path / "work"),
             "--logs-dir", str(tmp_path / "logs")],
            env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log_path.read_text()[-3000:]}"
        (leaf,) = x509.load_pem_x509_certificates((tmp_path / "config/live" / name / "cert.pem").read_bytes())
        assert san_strings(leaf) == {name}
        server.serial_row(leaf)
        # The account URL certbot keeps is the HTTPS one.
        (regr,) = (tmp_path / "config").glob("accounts/**/regr.json")
        assert f'"https://localhost:{server.tls_port}/acme/intermediate/acct/' in regr.read_text()
    finally:
        server.stop()


def test_listening_sockets_are_tcp_with_nodelay() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says it is
    TCP; without it every keep-alive response with a body waits ~40 ms for a delayed ACK."""
    import socket

    from pki_server.core.management.commands.serve import Command

    with Command.bind("127.0.0.1", 0, "--port") as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
