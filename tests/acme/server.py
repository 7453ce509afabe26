"""A real pki-server for ACME tests: `pki-server serve` under uvicorn in a subprocess, on loopback.

It has its own data directory (SQLite, keys), a root and an ACME-enabled intermediate, a DNS
responder (tests/acme/dnsserver.py) that every validation lookup goes through, and an HTTP-01
responder on the port the server validates against. Tests inspect the server's database with
:meth:`PkiServer.query` (read-only SQL), so they see what the server wrote, not a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.acme.dnsserver import DNSServer

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Http01Responder:
    """Serves /.well-known/acme-challenge/<token> from ``tokens`` on 127.0.0.1:<port>."""

    def __init__(self, port: int) -> None:
        self.tokens: dict[str, str] = {}
        self.requests: list[str] = []
        self.delay = 0.0  # seconds each answer waits (a slow web server)
        tokens, requests, responder = self.tokens, self.requests, self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                time.sleep(responder.delay)
                token = self.path.rpartition("/")[2]
                body = tokens.get(token)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                if body is not None:
                    self.wfile.write(body.encode("ascii"))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DNSThread:
    """The test DNS responder on an event loop of its own thread, so sync tests can use it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = DNSServer()

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def add_host(self, name: str, address: str = "127.0.0.1") -> None:
        self.server.records[(name, "AAAA" if ":" in address else "A")] = [address]


class PkiServer:
    def __init__(self, data_dir: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.http01_port = free_port()
        self.dns = DNSThread()
        self.http01 = Http01Responder(self.http01_port)
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}/acme/directory"

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PKI_")}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        host, port = self.dns.server.address
        env.update({
            "PKI_DATA_DIR": str(self.data_dir),
            "PKI_PORT": str(self.port),
            "PKI_DEFAULT_KEY_SIZE": "2048",
            "PKI_LOG_LEVEL": "INFO",
            "PKI_ACME_HTTP01_PORT": str(self.http01_port),
            "PKI_ACME_DNS_RESOLVERS": f"{host}:{port}",
            # Loopback is denied by default; these tests validate against loopback responders.
            "PKI_ACME_VALIDATION_DENY_NETWORKS": "169.254.0.0/16,192.0.2.0/24",
            **self.extra_env,
        })
        return env

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pki_server", *args], env=self.env, cwd=self.data_dir,
                              capture_output=True, text=True, timeout=120, check=check)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dns.start()
        self.http01.start()
        self.manage("init")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pki_server", "serve", "--port", str(self.port)],
            env=self.env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pki-server serve exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.directory_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pki-server serve did not answer in 30 s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.http01.stop()
        self.dns.stop()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the server's database (SQLite, read-only)."""
        uri = f"file:{self.data_dir / 'pki.sqlite3'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as connection:
            return connection.execute(sql, params).fetchall()

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[PkiServer]:
    server = PkiServer(data_dir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()
