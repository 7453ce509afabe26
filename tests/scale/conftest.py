"""The scaled topology on this machine's PostgreSQL and Redis: two web processes, two workers, one balancer.

``topology`` (one per test module) creates a database of its own on 127.0.0.1:5432 (dropped afterwards), takes
Redis database 11 on 127.0.0.1:6379 (flushed before and after), runs ``pki-server init`` once, then starts

- ``web0``, ``web1``: ``pki-server serve --no-worker`` on two ports, with a data directory of their own that holds
  no CA key (issuance happens in the workers). ``web0`` validates the challenges its requests start (the
  default); ``web1`` runs ``--no-validation`` and sends them to the workers, so both paths run here;
- ``worker0``, ``worker1``: ``pki-server worker``, with the data directory of the CA keys;
- a round-robin balancer (tests/scale/balancer.py) in front of the two web processes; PKI_BASE_URL is its URL,
  so every ACME URL a client follows goes through it again.

All share PKI_SECRET_KEY (nonces are HMACed with it), the database and Redis. Validation goes to a DNS responder
(tests/acme/dnsserver.py, also answering from a JSON file that certbot's hooks write) and to an HTTP-01
responder whose answers a test can hold back, to keep a validation in flight. The tests are marked ``scale``
and skipped when PostgreSQL or Redis is not reachable.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acme.server import DNSThread, free_port
from tests.network import flush_redis, reachable
from tests.scale.balancer import Balancer

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11
VALIDATION_TIMEOUT = 2  # PKI_ACME_VALIDATION_TIMEOUT: short, so that a dead worker's lease ends soon
START_TIMEOUT = 30.0  # seconds a process may take to come up
STOP_TIMEOUT = 10.0
ROLES = ("web0", "web1", "worker0", "worker1")


# --- HTTP-01 responder that can hold its answer back ----------------------------------------------------------------

class HoldingHttp01Responder:
    """Serves /.well-known/acme-challenge/<token> from ``tokens``; a token in ``held`` gets no answer until it is
    released (or 60 s pass). ``requests`` lists (token, client port) of every request, held ones included, so a
    test can tell which process is validating (see :func:`pid_of_tcp_client`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tokens: dict[str, str] = {}
        self.held: dict[str, threading.Event] = {}
        self.requests: list[tuple[str, int]] = []
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rpartition("/")[2]
                responder.requests.append((token, self.client_address[1]))
                event = responder.held.get(token)
                if event is not None:
                    event.wait(60)
                body = responder.tokens.get(token)
                with contextlib.suppress(OSError):
                    self.send_response(200 if body is not None else 404)
                    self.end_headers()
                    if body is not None:
                        self.wfile.write(body.encode("ascii"))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hold(self, token: str) -> None:
        self.held[token] = threading.Event()

    def release(self, token: str) -> None:
        event = self.held.pop(token, None)
        if event is not None:
            event.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        for token in list(self.held):
            self.release(token)
        self.server.shutdown()
        self.server.server_close()


# --- Which process owns a socket -------------------------------------------------------------------------------------

def _socket_inodes(local_port: int, remote_port: int | None = None) -> set[str]:
    """Inodes of TCP sockets on loopback with this local port (and remote port), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rpartition(":")[2], 16) != local_port:
                    continue
                if remote_port is not None and int(remote.rpartition(":")[2], 16) != remote_port:
                    continue
                inodes.add(inode)
    return inodes


def pid_of_tcp_client(local_port: int, remote_port: int, candidates: dict[str, int]) -> str | None:
    """Which of ``candidates`` (name -> pid) holds the TCP connection from ``local_port`` to ``remote_port``."""
    inodes = {f"socket:[{inode}]" for inode in _socket_inodes(local_port, remote_port)}
    for name, pid in candidates.items():
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") in inodes:
                        return name
    return None


# --- The topology ----------------------------------------------------------------------------------------------------

class Topology:
    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        self.database_url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{database}"
        self.redis_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
        self.secret_key = secrets.token_urlsafe(48)
        self.key_dir = root / "worker-data"  # CA keys: only the workers have them
        self.web_dir = root / "web-data"
        self.records_file = root / "dns-records.json"
        self.dns = DNSThread()
        self.dns.server.records_file = self.records_file
        self.http01 = HoldingHttp01Responder()
        self.web_ports = [free_port(), free_port()]
        self.balancer = Balancer([("127.0.0.1", port) for port in self.web_ports])
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}  # how many times each role was started (its log file's number)

    # --- environment and processes ---

    @property
    def base_url(self) -> str:
        return self.balancer.url

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}/acme/directory"

    def env(self, role: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PKI_")}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        host, port = self.dns.server.address
        env.update({
            "PKI_DATA_DIR": str(self.web_dir if role.startswith("web") else self.key_dir),
            "PKI_SECRET_KEY": self.secret_key,
            "PKI_DATABASE_URL": self.database_url,
            "PKI_REDIS_URL": self.redis_url,
            "PKI_BASE_URL": self.base_url,
            "PKI_DEFAULT_KEY_SIZE": "2048",
            "PKI_LOG_LEVEL": "INFO",
            "PKI_ACME_VALIDATION_TIMEOUT": str(VALIDATION_TIMEOUT),
            "PKI_ACME_DNS_RESOLVERS": f"{host}:{port}",
            "PKI_ACME_VALIDATION_DENY_NETWORKS": "none",  # the responders are on loopback
            "PKI_ACME_HTTP01_PORT": str(self.http01.port),
        })
        return env

    def manage(self, role: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "pki_server", *args], env=self.env(role), cwd=self.root,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"pki-server {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    def log_path(self, role: str) -> Path:
        return self.root / f"{role}-{self.starts.get(role, 0)}.log"

    def logs(self) -> str:
        """Every process's log, for assertion messages."""
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                         for path in sorted(self.root.glob("*.log")))

    def spawn(self, role: str) -> None:
        assert role not in self.processes or self.processes[role].poll() is not None, f"{role} is running"
        self.starts[role] = self.starts.get(role, 0) + 1
        if role.startswith("web"):
            port = self.web_ports[int(role[-1])]
            args = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port),
                    *(["--no-validation"] if role == "web1" else [])]
        else:
            args = ["worker"]
        with self.log_path(role).open("ab") as log:
            self.processes[role] = subprocess.Popen([sys.executable, "-m", "pki_server", *args], env=self.env(role),
                                                    cwd=self.root, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, role: str) -> None:
        process = self.processes[role]
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{role} exited with {process.returncode}:\n{self.logs()}")
            if role.startswith("web"):
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{self.web_ports[int(role[-1])]}/acme/directory"
                    if httpx.get(url, timeout=1).status_code == 200:
                        return
            elif "ACME worker listening" in self.log_path(role).read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{role} was not ready within {START_TIMEOUT} s:\n{self.logs()}")

    def start(self, *roles: str) -> None:
        roles = roles or ROLES
        for role in roles:
            self.spawn(role)
        for role in roles:
            self.wait_ready(role)

    def stop(self, *roles: str) -> None:
        """SIGTERM, as a service manager stops a process; SIGKILL if it does not end in STOP_TIMEOUT."""
        roles = roles or ROLES
        running = [self.processes[role] for role in roles if role in self.processes]
        for process in running:
            if process.poll() is None:
                process.terminate()
        for process in running:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def kill(self, role: str) -> None:
        process = self.processes[role]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)

    def running_workers(self) -> dict[str, int]:
        return self.running("worker")

    def running(self, prefix: str = "") -> dict[str, int]:
        """The pid of each running process whose role starts with ``prefix``."""
        return {role: process.pid for role, process in self.processes.items()
                if role.startswith(prefix) and process.poll() is None}

    def web_url(self, role: str, url: str) -> str:
        """``url`` (under base_url, through the balancer) sent straight to the web process ``role``."""
        assert url.startswith(self.base_url), url
        return f"http://127.0.0.1:{self.web_ports[int(role[-1])]}{url[len(self.base_url):]}"

    # --- the database ---

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=self.database,
                             connect_timeout=10, autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=self.database,
                               connect_timeout=10)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the scale tests find which process holds a socket through /proc (Linux only)")
    if not reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")
    import psycopg
    from psycopg import sql

    database = f"pki_scale_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True,
                            connect_timeout=10)
    topology = Topology(tmp_path_factory.mktemp("scale"), database)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
        topology.key_dir.mkdir()
        topology.web_dir.mkdir()
        topology.dns.start()
        topology.http01.start()
        topology.balancer.start()
        topology.manage("worker0", "init")
        topology.start()
        yield topology
    finally:
        topology.stop()
        topology.balancer.stop()
        topology.http01.stop()
        topology.dns.stop()
        with contextlib.suppress(Exception):
            flush_redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.close()
