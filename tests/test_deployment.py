"""The deployment files (compose.yaml, deploy/) checked without Docker, and the scaled topology run for real.

- compose.yaml parses, and its services, volumes and dependencies refer to each other consistently;
- every pki-server command line in the Dockerfile, compose.yaml and the systemd units names a real
  command and only options that command has;
- ``systemd-analyze verify`` accepts the units, ``nginx -t`` the nginx configurations (skipped
  where the tool is missing);
- deploy/nginx/issue-proxy-cert.py issues nginx's certificate from the server's CA, and keeps it;
- a keep-alive request to ``pki-server serve`` takes no delayed-ACK stall (TCP_NODELAY);
- the move from the embedded instance to PostgreSQL documented in docs/deployment.md (dumpdata,
  migrate, loaddata, copy the keys) keeps CAs, certificates and ACME accounts and orders, and the
  moved CA issues again (skipped without PostgreSQL);
- the scaled topology of the systemd units — two ``serve --no-worker`` processes behind nginx with
  deploy/nginx/pki-server.conf, two workers, PostgreSQL and Redis — issues a certificate over ACME
  through nginx's HTTPS (skipped without nginx, PostgreSQL or Redis).
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import re
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.acme.server import free_port
from tests.network import flush_redis, reachable
from tests.test_settings import TIMEOUT, pki_env, run_pki

yaml = pytest.importorskip("yaml")  # PyYAML: the dev extra

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
UNITS = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx"
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 14  # tests/scale uses 11; the channel layer has no prefix of its own


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# --- compose.yaml -------------------------------------------------------------------------------------

def test_compose_services_and_volumes_are_consistent() -> None:
    spec = compose()
    services, volumes = spec["services"], spec["volumes"]
    assert {"postgres", "redis", "init", "web", "worker", "nginx"} <= set(services)

    used_volumes = set()
    for name, service in services.items():
        assert "image" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
                used_volumes.add(source)
            else:
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
    assert used_volumes == set(volumes), "every declared volume is used, every used one declared"

    # Health checks where others wait on them; the one-shot init must succeed before the rest.
    for name in ("postgres", "redis", "web"):
        assert services[name]["healthcheck"]["test"], name
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "/acme/directory" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("web", "worker", "nginx"):
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name
    for name in ("init", "web", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert services["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"

    # The database and the key storage live in volumes; the workers (the processes that sign)
    # share the key storage with init (which creates the CA keys); the web processes do not need it.
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pki-data:/var/lib/pki-server" in services["init"]["volumes"]
    assert "pki-data:/var/lib/pki-server" in services["worker"]["volumes"]
    assert "--no-worker" in services["web"]["command"]
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_compose_gives_every_pki_process_the_same_settings() -> None:
    services = compose()["services"]
    environments = [services[name]["environment"] for name in ("init", "web", "worker")]
    assert environments[0] == environments[1] == environments[2]
    environment = environments[0]
    assert environment["PKI_SECRET_KEY"].startswith("${PKI_SECRET_KEY:?"), "from .env, required"
    assert environment["PKI_DATABASE_URL"].startswith("postgres://pki:${POSTGRES_PASSWORD")
    assert environment["PKI_DATABASE_URL"].endswith("@postgres:5432/pki")
    assert environment["PKI_REDIS_URL"] == "redis://redis:6379/0"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "ports" not in services["worker"], "workers listen on nothing"
    assert "ports" not in services["web"], "only nginx is published"
    nginx_mounts = services["nginx"]["volumes"]
    assert "./deploy/nginx/compose.conf:/etc/nginx/conf.d/default.conf:ro" in nginx_mounts
    assert not any(mount.startswith("pki-data") for mount in nginx_mounts), "nginx never sees the CA keys"


def test_dockerignore_lets_only_the_package_into_the_image() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: var/ (CA keys), .env (secrets) and .git never reach the daemon"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "pki_server"}
    copied = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert set(copied) <= allowed, copied


def test_dockerfile_runs_as_a_user_with_a_data_volume() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"], "built in one stage, run from a clean one"
    assert re.search(r"^USER pki$", text, re.MULTILINE)
    assert "pip install --no-cache-dir ." in text
    assert "ENV" in text and "PKI_DATA_DIR=/var/lib/pki-server" in text
    assert re.search(r'^VOLUME \["/var/lib/pki-server"\]$', text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    # Nothing after USER switches back to root.
    assert "USER root" not in text.split("USER pki", 1)[1]


# --- command lines name real commands and options ---------------------------------------------------

def pki_command_lines() -> dict[str, list[str]]:
    """Every pki-server command line the deployment files run, by where it comes from."""
    lines: dict[str, list[str]] = {}
    text = DOCKERFILE.read_text()
    lines["Dockerfile CMD"] = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "pki-server":
            lines[f"compose {name}"] = command
        elif isinstance(command, list) and command[0] == "sh":
            for part in command[-1].split("&&"):
                words = shlex.split(part)
                if words and words[0] == "pki-server":
                    lines[f"compose {name}: {part.strip()}"] = words
    for unit in sorted(UNITS.glob("*.service")):
        for match in re.finditer(r"^ExecStart=(.*)$", unit.read_text(), re.MULTILINE):
            words = shlex.split(match.group(1).replace("%i", "8001"))
            assert words[0] == "/opt/pki-server/bin/pki-server", unit.name
            lines[unit.name] = ["pki-server", *words[1:]]
    return lines


def options_of(command: str) -> set[str]:
    result = run_pki(["help", command], pki_env(None), ROOT)
    assert result.returncode == 0, f"pki-server {command}: {result.stderr}"
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", result.stdout))


def test_command_lines_use_existing_commands_and_options() -> None:
    lines = pki_command_lines()
    assert {"Dockerfile CMD", "compose web", "compose worker", "pki-server-web@.service",
            "pki-server-worker@.service"} <= set(lines)
    assert any(key.startswith("compose init: pki-server init") for key in lines)
    assert lines["Dockerfile CMD"] == ["pki-server", "serve", "--host", "0.0.0.0"]
    known: dict[str, set[str]] = {}
    for where, words in lines.items():
        command = words[1]
        if command not in known:
            known[command] = options_of(command)
        used = {word.split("=")[0] for word in words[2:] if word.startswith("--")}
        assert used <= known[command], f"{where}: pki-server {command} has no {used - known[command]}"


# --- systemd ------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    executable = shutil.which("pki-server", path=str(Path(sys.executable).parent)) or sys.executable
    for unit in UNITS.iterdir():
        # The units run /opt/pki-server/bin/pki-server; verify checks that it is executable.
        text = unit.read_text().replace("/opt/pki-server/bin/pki-server", executable)
        (tmp_path / unit.name).write_text(text)
    shutil.copy(tmp_path / "pki-server-web@.service", tmp_path / "pki-server-web@8001.service")
    shutil.copy(tmp_path / "pki-server-worker@.service", tmp_path / "pki-server-worker@1.service")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "pki-server-web@8001.service", "pki-server-worker@1.service",
         "pki-server.target"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "ignoring" not in result.stderr, result.stderr


def test_systemd_units_are_hardened() -> None:
    for name in ("pki-server-web@.service", "pki-server-worker@.service"):
        settings = dict(re.findall(r"^(\w+)=(.*)$", (UNITS / name).read_text(), re.MULTILINE))
        assert settings["User"] == "pki-server", name
        assert settings["EnvironmentFile"] == "/etc/pki-server/pki-server.env", name
        assert settings["Restart"] == "on-failure", name
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                           "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/pki-server"}.items():
            assert settings.get(key) == value, (name, key)
    web = (UNITS / "pki-server-web@.service").read_text()
    assert "--port %i" in web and "--no-worker" in web
    assert "InaccessiblePaths=-/var/lib/pki-server/keys" in web
    env = (DEPLOY / "env" / "pki-server.env.example").read_text()
    assert re.search(r"^PKI_DATA_DIR=/var/lib/pki-server$", env, re.MULTILINE)
    for variable in ("PKI_SECRET_KEY", "PKI_DATABASE_URL", "PKI_REDIS_URL", "PKI_BASE_URL"):
        assert re.search(rf"^{variable}=\S+$", env, re.MULTILINE), variable


# --- nginx --------------------------------------------------------------------------------------------

def self_signed(directory: Path, name: str = "localhost") -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def nginx_config(site: str, work: Path, tls_dir: Path, *, replacements: dict[str, str] | None = None) -> Path:
    """``site`` (a file of deploy/nginx) wrapped in a main configuration that runs as this user in ``work``."""
    text = (NGINX / site).read_text()
    text = text.replace("/etc/ssl/pki-server/", f"{tls_dir}/").replace("/etc/nginx/tls/", f"{tls_dir}/")
    for old, new in (replacements or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (work / "site.conf").write_text(text)
    main = work / "nginx.conf"
    main.write_text(f"""
pid {work}/nginx.pid;
error_log {work}/error.log;
daemon off;
events {{}}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/site.conf;
}}
""")
    return main


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("site", ["pki-server.conf", "compose.conf"])
def test_nginx_accepts_the_configuration(site: str, tmp_path: Path) -> None:
    self_signed(tmp_path)
    # compose's upstream is a service name that only resolves inside the compose network.
    main = nginx_config(site, tmp_path, tmp_path,
                        replacements={"server web:8000": "server 127.0.0.1:8000"} if site == "compose.conf" else None)
    result = subprocess.run(["nginx", "-t", "-q", "-c", str(main), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either


def test_nginx_configurations_proxy_alike() -> None:
    """compose.conf is pki-server.conf with other names: the proxy directives are the same."""
    def proxying(text: str) -> list[str]:
        lines = [line.strip() for line in text.splitlines()]
        return [line for line in lines if line.startswith(("proxy_", "client_", "keepalive", "ssl_protocols"))]

    host, compose_conf = (NGINX / "pki-server.conf").read_text(), (NGINX / "compose.conf").read_text()
    assert proxying(host) == proxying(compose_conf)
    assert "client_max_body_size 80k;" in proxying(host)  # the server's own cap is 64 KiB
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in proxying(host)
    assert "keepalive 32;" in proxying(host)


# --- nginx's certificate from the server's CA ----------------------------------------------------------

def test_issue_proxy_cert(tmp_path: Path) -> None:
    environ = pki_env(tmp_path / "var", PKI_BASE_URL="https://ca.example.test")
    assert run_pki(["init"], environ, tmp_path).returncode == 0
    out = tmp_path / "tls"
    out.mkdir()
    script = [sys.executable, str(NGINX / "issue-proxy-cert.py"), str(out), "--name", "localhost"]

    first = subprocess.run(script, env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                           check=False)
    assert first.returncode == 0, first.stderr
    assert "issued by CA intermediate for ca.example.test, localhost" in first.stdout
    chain = x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    assert chain[0].public_key() == key.public_key()
    assert [c.subject.rfc4514_string() for c in chain[1:]] == ["CN=pki-server Intermediate CA"]
    chain[0].verify_directly_issued_by(chain[1])
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["ca.example.test", "localhost"]

    again = subprocess.run(script, env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                           check=False)
    assert again.returncode == 0 and "kept" in again.stdout, again
    assert x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())[0] == chain[0]

    # A new name is not covered: a new certificate.
    more = subprocess.run([*script, "--name", "ca.internal"], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert more.returncode == 0 and "issued" in more.stdout, more
    assert x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())[0] != chain[0]

    # A CA that does not exist: the command's message, and the files stay as they were.
    before = (out / "fullchain.pem").read_bytes()
    wrong = subprocess.run([*script, "--ca", "nope", "--name", "other.test"], env=environ, cwd=tmp_path,
                           capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert wrong.returncode != 0 and "nope" in wrong.stderr, wrong
    assert (out / "fullchain.pem").read_bytes() == before


# --- processes: serve, worker, nginx ------------------------------------------------------------------

def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path, headers: dict[str, str] | None = None,
                  verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, headers=headers, verify=verify).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in 30 s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start(started: list[subprocess.Popen[bytes]], args: list[str], environ: dict[str, str], cwd: Path,
          log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, env=environ, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    started.append(process)
    return process


def keepalive_latency(host: str, port: int, path: str, *, context: ssl.SSLContext | None = None,
                      headers: dict[str, str] | None = None, count: int = 20) -> float:
    """The median time, in seconds, of ``count`` requests one after another on one connection."""
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, context=context, timeout=10) if context
        else http.client.HTTPConnection(host, port, timeout=10))
    times = []
    try:
        for index in range(count + 3):
            began = time.perf_counter()
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            if index >= 3:  # the first ones open the connection and warm caches
                times.append(time.perf_counter() - began)
    finally:
        connection.close()
    return statistics.median(times)


def test_keepalive_requests_take_no_delayed_ack_stall(tmp_path: Path) -> None:
    """A response written in two segments (headers, body) on a socket without TCP_NODELAY waits for
    the client's delayed ACK: ~40 ms per keep-alive request on Linux. This is why the deployment runs
    N `pki-server serve` processes and not `uvicorn --workers N` (whose listening socket has
    proto 0, so asyncio does not set TCP_NODELAY on accepted connections): serve must not lose it."""
    environ = pki_env(tmp_path / "var")
    assert run_pki(["init"], environ, tmp_path).returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    with processes() as started:
        server = start(started, [sys.executable, "-m", "pki_server", "serve", "--port", str(port)],
                       environ, tmp_path, log)
        wait_for_http(f"http://127.0.0.1:{port}/acme/directory", server, log)
        latency = keepalive_latency("127.0.0.1", port, "/acme/directory")
        # The image's HEALTHCHECK command, against this server, and against nothing.
        command = json.loads(re.search(r"^\s+CMD (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE).group(1))
        assert command[0] == "python"
        healthy = subprocess.run([sys.executable, *command[1:]], env={**environ, "PKI_PORT": str(port)},
                                 capture_output=True, text=True, timeout=30, check=False)
        assert healthy.returncode == 0, healthy.stderr
        unhealthy = subprocess.run([sys.executable, *command[1:]], env={**environ, "PKI_PORT": str(free_port())},
                                   capture_output=True, text=True, timeout=30, check=False)
        assert unhealthy.returncode != 0
    assert latency < 0.02, f"{latency * 1000:.1f} ms per keep-alive request: TCP_NODELAY is off"


# --- from embedded to scaled --------------------------------------------------------------------------

@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"pki_deploy_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True,
                            connect_timeout=10)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


# The recipe of docs/deployment.md, "From embedded to scaled".
DUMP = ["dumpdata", "auth.user", "auth.group", "pki_core", "pki_acme", "--exclude", "pki_acme.acmenonce",
        "--natural-foreign", "--output"]


@pytest.mark.postgres
@pytest.mark.skipif(not reachable(PG_HOST, PG_PORT), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
def test_move_from_embedded_to_postgresql(tmp_path: Path) -> None:
    from acme import errors, messages

    from tests.acme import flow_helpers as flows
    from tests.acme.server import running_server

    # An embedded instance with what a real one has: CAs, an ACME account with a valid order and its
    # certificate, a certificate signed on the command line and revoked, an admin user.
    embedded = tmp_path / "embedded"
    with running_server(embedded) as server:
        acme = flows.register(server)
        old_order, old_cert, _key = flows.obtain(server, acme, [flows.unique_name("before")])
        account_slug = flows.account_url(acme).rpartition("/")[2]
        order_path = old_order.uri.removeprefix(server.base_url)
        environ = server.env
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cli.example.test")])
    ).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    (embedded / "cli.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    signed = run_pki(["sign_cert", "--ca", "intermediate", "--csr", "cli.csr", "--alt", "cli.example.test"],
                     environ, embedded)
    assert signed.returncode == 0, signed.stderr
    cli_cert = x509.load_pem_x509_certificate(signed.stdout.encode())
    assert run_pki(["revoke_cert", f"{cli_cert.serial_number:X}"], environ, embedded).returncode == 0
    admin = run_pki(["createsuperuser", "--no-input", "--username", "admin", "--email", "admin@example.test"],
                    {**environ, "DJANGO_SUPERUSER_PASSWORD": "correct horse battery"}, embedded)
    assert admin.returncode == 0, admin.stderr
    cas_before = run_pki(["list_cas"], environ, embedded).stdout
    certs_before = run_pki(["list_certs", "--all"], environ, embedded).stdout

    # 1. dump (the embedded server is stopped)
    dump = tmp_path / "pki-data.json"
    dumped = run_pki([*DUMP, str(dump)], environ, embedded)
    assert dumped.returncode == 0, dumped.stderr

    with postgres_database() as database_url:
        # 2. the new data directory gets the key files; the secret key is carried over
        scaled = tmp_path / "scaled"
        scaled.mkdir()
        shutil.copytree(embedded / "keys", scaled / "keys")
        secret = (embedded / "secret_key").read_text().strip()
        moved = {**environ, "PKI_DATA_DIR": str(scaled), "PKI_DATABASE_URL": database_url,
                 "PKI_SECRET_KEY": secret}
        # 3. tables, then the data
        migrated = run_pki(["migrate", "--no-input", "-v", "0"], moved, scaled)
        assert migrated.returncode == 0, migrated.stderr
        loaded = run_pki(["loaddata", str(dump)], moved, scaled)
        assert loaded.returncode == 0, loaded.stderr
        assert re.match(r"Installed \d+ object\(s\) from 1 fixture\(s\)", loaded.stdout), loaded.stdout

        assert run_pki(["list_cas"], moved, scaled).stdout == cas_before
        assert run_pki(["list_certs", "--all"], moved, scaled).stdout == certs_before
        check_admin = run_pki(["shell", "--no-imports", "-c",
                               "from django.contrib.auth.models import User; "
                               "print(User.objects.get(username='admin').check_password('correct horse battery'))"],
                              moved, scaled)
        assert check_admin.stdout.strip() == "True", check_admin.stderr

        # 4. the moved server: the account and its order are there, and the moved CA issues again
        # (new rows in every table: PostgreSQL's sequences were moved past the loaded ids).
        extra = {"PKI_DATABASE_URL": database_url, "PKI_SECRET_KEY": secret}
        with running_server(scaled, extra_env=extra) as server:
            again = flows.acme_client(server, flows.private_key_of(acme))
            with pytest.raises(errors.ConflictError) as existing:
                again.new_account(messages.NewRegistration(only_return_existing=True))
            account_url = existing.value.location
            assert account_url.rpartition("/")[2] == account_slug
            again.net.account = messages.RegistrationResource(uri=account_url, body=messages.Registration())
            order = flows.order_json(again, server.base_url + order_path)
            assert order["status"] == "valid", order
            downloaded = flows.post(again, order["certificate"])
            assert x509.load_pem_x509_certificates(downloaded.content)[0] == old_cert

            _order, new_cert, _key = flows.obtain(server, again, [flows.unique_name("after")])
            assert new_cert.issuer == old_cert.issuer
            intermediate = run_pki(["dump_ca", "intermediate"], moved, scaled)
            new_cert.verify_directly_issued_by(x509.load_pem_x509_certificate(intermediate.stdout.encode()))
            signed = run_pki(["sign_cert", "--ca", "intermediate", "--csr", str(embedded / "cli.csr")], moved, scaled)
            assert signed.returncode == 0, signed.stderr
        assert len(run_pki(["list_certs", "--all", "--format", "serial"], moved, scaled).stdout.split()) == 4


# --- the scaled topology, as the systemd units and nginx's configuration run it -----------------------

def unit_command(name: str, instance: str) -> list[str]:
    text = (UNITS / name).read_text()
    words = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1).replace("%i", instance))
    return [sys.executable, "-m", "pki_server", *words[1:]]


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.skipif(not reachable(PG_HOST, PG_PORT), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
@pytest.mark.skipif(not reachable(REDIS_HOST, REDIS_PORT),
                    reason=f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")
def test_scaled_topology_behind_nginx(tmp_path: Path) -> None:
    import josepy
    from acme import client, messages

    from tests.acme import flow_helpers as flows
    from tests.acme.server import DNSThread, Http01Responder

    https_port, http_port, web_ports = free_port(), free_port(), [free_port(), free_port()]
    dns, http01 = DNSThread(), Http01Responder(free_port())
    dns.start()
    http01.start()
    flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
    try:
        with postgres_database() as database_url, processes() as started:
            dns_host, dns_port = dns.server.address
            environ = pki_env(
                tmp_path / "var", PKI_DATABASE_URL=database_url, PKI_REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
                PKI_SECRET_KEY=uuid.uuid4().hex * 2, PKI_BASE_URL=f"https://localhost:{https_port}",
                PKI_ACME_HTTP01_PORT=str(http01.server.server_address[1]),
                PKI_ACME_DNS_RESOLVERS=f"{dns_host}:{dns_port}",
                PKI_ACME_VALIDATION_DENY_NETWORKS="169.254.0.0/16", PKI_LOG_LEVEL="INFO",
            )
            initialised = run_pki(["init"], environ, tmp_path)
            assert initialised.returncode == 0, initialised.stderr
            tls = tmp_path / "tls"
            tls.mkdir()
            issued = subprocess.run([sys.executable, str(NGINX / "issue-proxy-cert.py"), str(tls)], env=environ,
                                    cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False)
            assert issued.returncode == 0, issued.stderr
            root_pem = run_pki(["dump_ca", "root"], environ, tmp_path).stdout
            (tmp_path / "root.pem").write_text(root_pem)
            trust = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))

            logs = tmp_path / "logs"
            logs.mkdir()
            webs = [start(started, unit_command("pki-server-web@.service", str(port)), environ, tmp_path,
                          logs / f"web-{port}.log") for port in web_ports]
            for index in (1, 2):
                start(started, unit_command("pki-server-worker@.service", str(index)), environ, tmp_path,
                      logs / f"worker-{index}.log")
            for port, web in zip(web_ports, webs, strict=True):
                wait_for_http(f"http://127.0.0.1:{port}/acme/directory", web, logs / f"web-{port}.log")

            nginx_dir = tmp_path / "nginx"
            nginx_dir.mkdir()
            main = nginx_config("pki-server.conf", nginx_dir, tls, replacements={
                "server 127.0.0.1:8001 ": f"server 127.0.0.1:{web_ports[0]} ",
                "server 127.0.0.1:8002 ": f"server 127.0.0.1:{web_ports[1]} ",
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                "listen [::]:80;": "",
                "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
                "listen [::]:443 ssl;": "",
                "server_name ca.example.com;": "server_name localhost;",
            })
            nginx = start(started, ["nginx", "-c", str(main), "-p", str(nginx_dir), "-e", str(nginx_dir / "e.log")],
                          environ, tmp_path, logs / "nginx.log")
            directory_url = f"https://localhost:{https_port}/acme/directory"
            wait_for_http(directory_url, nginx, logs / "nginx.log", verify=trust)

            # Port 80 only redirects.
            redirect = httpx.get(f"http://127.0.0.1:{http_port}/acme/directory", headers={"Host": "localhost"})
            assert redirect.status_code == 301
            assert redirect.headers["Location"] == "https://localhost/acme/directory"

            # The directory's URLs are nginx's, scheme and port included (X-Forwarded-Proto, Host).
            directory = httpx.get(directory_url, verify=trust).json()
            assert directory["newNonce"].startswith(f"https://localhost:{https_port}/acme/"), directory

            # A whole ACME order through nginx: its requests go round robin over both web processes,
            # validation and issuance happen in the workers.
            network = client.ClientNetwork(josepy.JWKEC(key=flows.ec_key()), alg=josepy.ES256,
                                           verify_ssl=str(tmp_path / "root.pem"))
            acme = client.ClientV2(client.ClientV2.get_directory(directory_url, network), network)
            acme.new_account(messages.NewRegistration(terms_of_service_agreed=True))
            name = flows.unique_name("scaled")
            dns.add_host(name)
            csr_pem, _key = flows.make_csr_pem([name])
            orderr = acme.new_order(csr_pem)
            challb = flows.http01(orderr.authorizations[0])
            response, validation = challb.response_and_validation(acme.net.key)
            http01.tokens[challb.chall.encode("token")] = validation
            acme.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=30)
            finished = acme.poll_and_finalize(orderr, deadline)
            leaf = x509.load_pem_x509_certificates(finished.fullchain_pem.encode())[0]
            assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
                .get_values_for_type(x509.DNSName) == [name]

            access = re.compile(r'"(?:GET|HEAD|POST) /acme/')
            served = [len(access.findall((logs / f"web-{port}.log").read_text())) for port in web_ports]
            assert all(count > 0 for count in served), f"requests per web process: {served}"
            worker_logs = (logs / "worker-1.log").read_text() + (logs / "worker-2.log").read_text()
            assert "Traceback" not in worker_logs, worker_logs[-3000:]

            # Keep-alive through nginx (TLS to nginx, pooled connections to the web processes).
            latency = keepalive_latency("localhost", https_port, "/acme/directory", context=trust)
            assert latency < 0.02, f"{latency * 1000:.1f} ms per keep-alive request through nginx"
    finally:
        http01.stop()
        dns.stop()
        with contextlib.suppress(Exception):  # spent nonces and wake-ups: nothing of this test outlives it
            flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
