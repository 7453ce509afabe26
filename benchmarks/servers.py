"""The servers the benchmarks run against, each started on loopback in a directory of its own.

- :func:`pebble`: Pebble (Debian package ``pebble``) with a TLS certificate made here for its listener (its CA
  is written to ``pebble.minica.pem``), PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0, and
  ``pebble-challtestsrv`` as its DNS server (every name is 127.0.0.1; dns-01 TXT records are set through its
  management API; its HTTP-01 listeners are off).
- :func:`pki_embedded`: pki-server embedded: its own PKI_DATA_DIR (SQLite), ``pki-server init``, optionally
  filled with finished orders and certificates (benchmarks/fill_db.py), ``pki-server serve`` (the ACME worker
  in the same process).
- :func:`pki_scaled`: pki-server scaled: a fresh PostgreSQL database on 127.0.0.1:5432 (dropped afterwards),
  Redis database 12 on 127.0.0.1:6379 (flushed before and after), two ``pki-server serve --no-worker`` and one
  ``pki-server worker`` sharing one PKI_DATA_DIR and PKI_SECRET_KEY, behind a round-robin TCP balancer
  (tests/scale/balancer.py, in this process) whose URL is PKI_BASE_URL.

Every pki-server validates against the load client's HTTP-01 responder (PKI_ACME_HTTP01_PORT) and resolves
through the load client's DNS responder (PKI_ACME_DNS_RESOLVERS).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
FILL_TIMEOUT = 3600.0  # seconds benchmarks/fill_db.py may take (100,000 orders: a few minutes)


def free_port(udp_too: bool = False) -> int:
    for _attempt in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, verify: Any = True, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, verify=verify, timeout=1, trust_env=False).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def make_minica(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1/localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchmark minica")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "pebble.minica.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Target:
    """A running server and what the load client needs to know about it."""
    label: str
    directory: str
    pids: list[int]  # the processes whose CPU is measured (pki-server: every serve and worker)
    load_args: list[str] = field(default_factory=list)


def rss_bytes(pid: int) -> int | None:
    """Resident memory (VmRSS of /proc/<pid>/status), or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def pebble(workdir: Path, http01_port: int) -> Iterator[Target]:
    tools = {tool: shutil.which(tool) for tool in ("pebble", "pebble-challtestsrv")}
    for tool, path in tools.items():
        if path is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install -y pebble)")
    workdir.mkdir()
    ca_file, cert_file, key_file = make_minica(workdir)
    port, management, dns_port, challtest_management = free_port(), free_port(), free_port(True), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert_file), "privateKey": str(key_file),
        "httpPort": http01_port, "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}
    (workdir / "pebble-config.json").write_text(json.dumps(config, indent=2))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEBBLE_")}
    env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
    challtest_log, pebble_log = workdir / "challtestsrv.log", workdir / "pebble.log"
    challtest = server = None
    try:
        with challtest_log.open("wb") as log:
            challtest = subprocess.Popen(  # noqa: S603 (our own argument list)
                [str(tools["pebble-challtestsrv"]), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "",
                 "-https01", "", "-tlsalpn01", "", "-dns01", f"127.0.0.1:{dns_port}",
                 "-management", f"127.0.0.1:{challtest_management}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        with pebble_log.open("wb") as log:
            server = subprocess.Popen(  # noqa: S603
                [str(tools["pebble"]), "-config", str(workdir / "pebble-config.json"),
                 "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        directory = f"https://127.0.0.1:{port}/dir"
        wait_for(directory, server, pebble_log, verify=str(ca_file))
        yield Target("pebble", directory, [server.pid],
                     ["--ca-file", str(ca_file), "--root-url", f"https://127.0.0.1:{management}/roots/0",
                      "--challtestsrv", f"http://127.0.0.1:{challtest_management}"])
    finally:
        stop(server)
        stop(challtest)


def _pki_env(data_dir: Path, http01_port: int, dns_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PKI_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({
        "PKI_DATA_DIR": str(data_dir),
        "PKI_ACME_HTTP01_PORT": str(http01_port),
        "PKI_ACME_DNS_RESOLVERS": f"127.0.0.1:{dns_port}",
        "PKI_ACME_VALIDATION_DENY_NETWORKS": "none",  # loopback is denied by default; we validate on loopback
    })
    # `python -m pki_server` must be the code of this checkout, whatever the venv has installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


PKI = [sys.executable, "-m", "pki_server"]
# Extra arguments for every `pki-server serve` (an experiment: `--log-level warning`, say).
SERVE_ARGS = shlex.split(os.environ.get("PKI_BENCH_SERVE_ARGS", ""))


def _init(workdir: Path, env: dict[str, str], fill: int) -> None:
    """``pki-server init``, the root to root.pem, and (``fill`` > 0) that many orders and certificates."""
    subprocess.run([*PKI, "init"], env=env, cwd=workdir, check=True,  # noqa: S603
                   capture_output=True, timeout=120)
    subprocess.run([*PKI, "dump_ca", "root", str(workdir / "root.pem")],  # noqa: S603
                   env=env, cwd=workdir, check=True, capture_output=True, timeout=60)
    if fill:
        result = subprocess.run([sys.executable, str(HERE / "fill_db.py"), "--orders", str(fill)],  # noqa: S603
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=FILL_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"fill_db.py failed: {result.stdout[-1000:]}{result.stderr[-2000:]}")
        print(f"# {result.stdout.strip()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def pki_embedded(workdir: Path, http01_port: int, dns_port: int, label: str = "embedded",
                 fill: int = 0) -> Iterator[Target]:
    """One ``pki-server serve`` (SQLite, in-process worker); ``fill``: orders and certificates put in first."""
    workdir.mkdir()
    port = free_port()
    env = _pki_env(workdir, http01_port, dns_port)
    env["PKI_PORT"] = str(port)
    _init(workdir, env, fill)
    log_path = workdir / "serve.log"
    server = None
    try:
        with log_path.open("wb") as log:
            server = subprocess.Popen([*PKI, "serve", "--port", str(port), *SERVE_ARGS],  # noqa: S603
                                      env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        directory = f"http://127.0.0.1:{port}/acme/directory"
        wait_for(directory, server, log_path, seconds=120)
        yield Target(label, directory, [server.pid],
                     ["--dns-port", str(dns_port), "--root-file", str(workdir / "root.pem")])
    finally:
        stop(server)


def _wait_for_log(text: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode}): {log.read_text()[-2000:]}")
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} did not appear in {log} within {seconds:.0f} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def pki_scaled(workdir: Path, http01_port: int, dns_port: int, *, per_request: bool = False) -> Iterator[Target]:
    """Two ``serve --no-worker`` and one ``worker`` on PostgreSQL and Redis, behind a round-robin balancer.

    ``per_request``: the balancer closes every connection after one request, so that consecutive requests of
    a client alternate between the web processes (tests/scale/balancer.py's default); otherwise it balances
    connections, which the load client keeps alive (like a proxy keeping its upstream connections)."""
    import psycopg
    from psycopg import sql

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.network import flush_redis
    from tests.scale.balancer import Balancer

    workdir.mkdir()
    data_dir = workdir / "data"
    data_dir.mkdir()
    database = f"pki_bench_{uuid.uuid4().hex[:12]}"
    web_ports = [free_port(), free_port()]
    balancer = Balancer([("127.0.0.1", port) for port in web_ports], one_request_per_connection=per_request)
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                            connect_timeout=10)
    processes: list[subprocess.Popen[bytes]] = []
    created = False
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        created = True
        flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
        balancer.start()
        env = _pki_env(data_dir, http01_port, dns_port)
        env.update({
            "PKI_SECRET_KEY": secrets.token_urlsafe(48),
            "PKI_DATABASE_URL": f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}",
            "PKI_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "PKI_BASE_URL": balancer.url,  # 127.0.0.1: in ALLOWED_HOSTS by default
        })
        _init(workdir, env, 0)
        commands = [("web0", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(web_ports[0]), *SERVE_ARGS]),
                    ("web1", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(web_ports[1]), *SERVE_ARGS]),
                    ("worker", ["worker"])]
        for role, args in commands:
            with (workdir / f"{role}.log").open("wb") as log:
                processes.append(subprocess.Popen([*PKI, *args], env=env, cwd=workdir,  # noqa: S603
                                                  stdout=log, stderr=subprocess.STDOUT))
        for port, process, role in zip(web_ports, processes, ("web0", "web1"), strict=False):
            wait_for(f"http://127.0.0.1:{port}/acme/directory", process, workdir / f"{role}.log", seconds=60)
        _wait_for_log("ACME worker listening", processes[2], workdir / "worker.log")
        directory = f"{balancer.url}/acme/directory"
        wait_for(directory, processes[0], workdir / "web0.log")
        yield Target("scaled", directory, [process.pid for process in processes],
                     ["--dns-port", str(dns_port), "--root-file", str(workdir / "root.pem")])
    finally:
        for process in processes:
            stop(process)
        balancer.stop()
        with contextlib.suppress(Exception):
            flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
        if created:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.close()
