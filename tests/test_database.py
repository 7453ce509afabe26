"""The database under concurrent writers: embedded SQLite, and PostgreSQL where it runs.

Every scenario runs real ``pki-server`` processes: ``migrate``, a CA made with
``CertificateAuthority.objects.init``, then several processes issuing and revoking at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.network import reachable
from tests.test_settings import TIMEOUT, pki_env, run_pki

WORKERS = 4
CERTS_PER_WORKER = 15
REVOKE_EVERY = 3  # each worker revokes certificates 0, 3, 6, ... of its own
REVOKED_PER_WORKER = len(range(0, CERTS_PER_WORKER, REVOKE_EVERY))

CREATE_CA = """
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions
from pki_server.core.models import CertificateAuthority
ca = CertificateAuthority.objects.init(
    "concurrency", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256"),
    "/CN=Concurrency Test CA",
)
print(ca.serial)
"""

# One worker: waits at a barrier so that all start together, then issues and revokes.
WORKER = """
import sys, time
from pathlib import Path

import django

django.setup()

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import transaction

from pki_server.core.key_backends.storages import UsePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority

worker, count, revoke_every, barrier = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
(barrier / f"ready-{worker}").touch()
deadline = time.monotonic() + 60
while not (barrier / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("worker %d: no go signal within 60 s" % worker)
    time.sleep(0.01)

ca = CertificateAuthority.objects.get(name="concurrency")
for i in range(count):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    cert = Certificate.objects.create_cert(
        ca, UsePrivateKeyOptions(password=None), csr, subject=f"/CN=w{worker}-{i}.example.com"
    )
    if i % revoke_every == 0:
        # Read, then write, in one transaction: the pattern that fails with "database is locked"
        # on SQLite unless the transaction takes the write lock when it begins.
        with transaction.atomic():
            fresh = Certificate.objects.get(pk=cert.pk)
            fresh.revoke("superseded")
print(f"worker {worker} done")
"""


def run_scenario(tmp_path: Path, environ: dict[str, str]) -> None:
    """Migrate, create a CA, then issue and revoke from WORKERS processes at once."""
    migrate = run_pki(["migrate", "--no-input", "-v", "0"], environ, tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    create = run_pki(["shell", "--no-imports", "-c", CREATE_CA], environ, tmp_path)
    assert create.returncode == 0, create.stderr
    assert len(create.stdout.strip()) >= 16, create.stdout

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    worker_env = {**environ, "DJANGO_SETTINGS_MODULE": "pki_server.settings"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), str(CERTS_PER_WORKER), str(REVOKE_EVERY), str(barrier)],
            env=worker_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(barrier.glob("ready-*"))) < WORKERS:
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        (barrier / "go").touch()
        results = [(p, *p.communicate(timeout=TIMEOUT)) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for worker, (process, out, err) in enumerate(results):
        assert "database is locked" not in err, err
        assert process.returncode == 0, f"worker {worker} exited {process.returncode}:\n{err}"
        assert "done" in out


COUNT_ROWS = """
from pki_server.core.models import Certificate, CertificateAuthority
ca = CertificateAuthority.objects.get(name="concurrency")
certs = Certificate.objects.filter(ca=ca)
print(certs.count(), certs.filter(revoked=True).count(), certs.filter(revoked_reason="superseded").count(),
      len(set(certs.values_list("serial", flat=True))), certs.filter(cn__endswith=".example.com").count())
"""


def assert_rows(tmp_path: Path, environ: dict[str, str]) -> None:
    result = run_pki(["shell", "--no-imports", "-c", COUNT_ROWS], environ, tmp_path)
    assert result.returncode == 0, result.stderr
    total, revoked, superseded, serials, named = map(int, result.stdout.split())
    expected = WORKERS * CERTS_PER_WORKER
    assert (total, serials, named) == (expected, expected, expected)
    assert revoked == superseded == WORKERS * REVOKED_PER_WORKER


# --- SQLite -----------------------------------------------------------------------------------------

def test_sqlite_concurrent_issue_and_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    environ = pki_env(data_dir)
    run_scenario(tmp_path, environ)
    assert_rows(tmp_path, environ)
    assert (data_dir / "pki.sqlite3").is_file()
    assert len(list((data_dir / "keys" / "ca").glob("*.key"))) == 1


PRAGMAS = """
from django.db import connection
with connection.cursor() as cursor:
    for pragma in ("journal_mode", "busy_timeout", "foreign_keys"):
        cursor.execute(f"PRAGMA {pragma}")
        print(cursor.fetchone()[0])
print(connection.transaction_mode)
"""


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    environ = pki_env(tmp_path / "var")
    migrate = run_pki(["migrate", "--no-input", "-v", "0"], environ, tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    result = run_pki(["shell", "--no-imports", "-c", PRAGMAS], environ, tmp_path)
    assert result.returncode == 0, result.stderr
    journal_mode, busy_timeout, foreign_keys, transaction_mode = result.stdout.split()
    assert journal_mode.lower() == "wal"
    assert int(busy_timeout) >= 5000
    assert foreign_keys == "1"
    assert transaction_mode == "IMMEDIATE"


# --- PostgreSQL -------------------------------------------------------------------------------------

PG_HOST, PG_PORT = "127.0.0.1", 5432


def postgres_reachable() -> bool:
    return reachable(PG_HOST, PG_PORT)


@contextlib.contextmanager
def scratch_postgres_database(prefix: str = "pki_test") -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (its name), dropped afterwards whatever happens."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True,
                            connect_timeout=10, options="-c statement_timeout=60000")
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
def test_postgres_concurrent_issue_and_revoke(tmp_path: Path) -> None:
    import psycopg

    with scratch_postgres_database() as name:
        environ = pki_env(tmp_path / "var",
                          PKI_DATABASE_URL=f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}")
        run_scenario(tmp_path, environ)
        assert_rows(tmp_path, environ)
        assert not (tmp_path / "var" / "pki.sqlite3").exists(), "PKI_DATABASE_URL must replace SQLite"
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=name,
                             connect_timeout=10) as check:
            ca_rows = check.execute(
                "SELECT name, key_backend_alias, enabled FROM pki_core_certificateauthority"
            ).fetchall()
            assert ca_rows == [("concurrency", "default", True)]
            rows = check.execute(
                "SELECT count(*), count(*) FILTER (WHERE revoked), count(DISTINCT serial) "
                "FROM pki_core_certificate"
            ).fetchone()
            expected = WORKERS * CERTS_PER_WORKER
            assert rows == (expected, WORKERS * REVOKED_PER_WORKER, expected)
