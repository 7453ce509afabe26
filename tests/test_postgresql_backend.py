"""pki_server.postgresql: Django's PostgreSQL backend with the health check spaced out, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError
from django.db.utils import ConnectionHandler

from pki_server import environment
from pki_server.postgresql import base
from tests.test_database import PG_HOST, PG_PORT, postgres_reachable, scratch_postgres_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"),
]


@pytest.fixture
def connection(django_db_blocker: Any) -> Iterator[Any]:
    """A connection of our backend to a scratch database (not the tests' database: pytest-django's unblocked)."""
    with scratch_postgres_database("pki_backend") as name, django_db_blocker.unblock():
        # The entry pki-server makes from PKI_DATABASE_URL, options and all.
        url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
        handler = ConnectionHandler({"default": environment.database({"PKI_DATABASE_URL": url}, Path("unused"))})
        connection = handler["default"]
        try:
            yield connection
        finally:
            connection.close()


def hop(connection: Any) -> int:
    """One thread hop as channels' database_sync_to_async makes it: close_old_connections, then a query."""
    connection.close_if_unusable_or_obsolete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def terminate(pid: int) -> None:
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def count_checks(connection: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    checks: list[bool] = []
    original = connection.is_usable

    def is_usable() -> bool:
        checks.append(usable := original())
        return usable

    monkeypatch.setattr(connection, "is_usable", is_usable)
    return checks


def test_no_round_trip_for_a_connection_checked_seconds_ago(connection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    checks = count_checks(connection, monkeypatch)
    pids = {hop(connection) for _ in range(20)}
    assert len(pids) == 1, "the connection is kept"
    assert checks == [], "a new connection is not checked again within the interval"
    monkeypatch.setattr(base, "HEALTH_CHECK_INTERVAL", 0.0)
    hop(connection)
    hop(connection)
    assert checks == [True, True], "past the interval, each hop checks again"


def test_a_connection_broken_while_idle_is_replaced_before_a_query_fails(
        connection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first = hop(connection)
    terminate(first)
    monkeypatch.setattr(base, "HEALTH_CHECK_INTERVAL", 0.0)  # as when the connection sat idle
    second = hop(connection)  # the check sees the broken connection; Django reconnects
    assert second != first


def test_a_connection_broken_within_the_interval_fails_one_query_then_recovers(connection: Any) -> None:
    first = hop(connection)
    terminate(first)
    with pytest.raises(OperationalError):
        hop(connection)
    assert connection.errors_occurred
    second = hop(connection)  # close_old_connections closed it after the error: a new one
    assert second != first


def test_prepared_execute_on_the_driver_cursor(connection: Any) -> None:
    """pki_server.prepared.execute skips Django's cursor; on psycopg it must still adapt, convert and wrap."""
    from datetime import UTC, datetime

    from django.db import IntegrityError

    from pki_server.prepared import execute

    assert not connection.queries_logged
    execute(connection, "CREATE TABLE t (k text PRIMARY KEY, at timestamptz)", [], fetch=False)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert execute(connection, "INSERT INTO t VALUES (%s, %s), (%s, %s)", ["a", at, "b", None], fetch=False) == 2
    assert execute(connection, "SELECT k || '%%', at FROM t WHERE k = %s", ["a"], fetch=True) == [("a%", at)]
    with pytest.raises(IntegrityError):
        execute(connection, "INSERT INTO t VALUES (%s, %s)", ["a", None], fetch=False)
    assert execute(connection, "SELECT count(*) FROM t", [], fetch=True) == [(2,)]


def test_statements_run_often_are_prepared_on_the_server(connection: Any) -> None:
    """PostgreSQL parses and plans a statement once per connection after PREPARE_THRESHOLD runs, not on every run."""
    from pki_server.prepared import execute

    execute(connection, "CREATE TABLE p (k text PRIMARY KEY, n integer)", [], fetch=False)
    execute(connection, "INSERT INTO p VALUES (%s, %s), (%s, %s)", ["a", 1, "b", 2], fetch=False)
    lookup = "SELECT n FROM p WHERE k = %s"
    prepared = "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT n FROM p WHERE k = $1'"
    for run in range(environment.PREPARE_THRESHOLD):
        assert execute(connection, lookup, ["ab"[run % 2]], fetch=True) == [(run % 2 + 1,)]
    assert execute(connection, prepared, [], fetch=True) == [(0,)], "not prepared before the threshold"
    assert execute(connection, lookup, ["b"], fetch=True) == [(2,)]
    assert execute(connection, prepared, [], fetch=True) == [(1,)], "prepared once run often"
    with connection.cursor() as cursor:  # the ORM's statements are bound on the server too
        assert type(cursor.cursor).__name__ == "ServerBindingCursor"
        cursor.execute("SELECT n + %s FROM p WHERE k = %s", [40, "b"])
        assert cursor.fetchone() == (42,)
