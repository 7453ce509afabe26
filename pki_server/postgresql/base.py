"""Django's PostgreSQL backend, with the connection health check spaced out.

With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1`` before the first query after every
``close_old_connections()``, and the database thread (pki_server/dbthread.py) calls that around every
thread hop: one extra round trip for each ACME request and each piece of worker bookkeeping.
Here the check runs when the connection has not been checked (or opened) for
``HEALTH_CHECK_INTERVAL`` seconds. A connection that breaks within that time fails the query that
meets it; Django then closes it (``errors_occurred``) and the next one reconnects — what happens
without health checks, but only for a connection that was in use seconds ago.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_INTERVAL = 5.0  # seconds


class DatabaseWrapper(base.DatabaseWrapper):
    checked_at = 0.0  # time.monotonic() of the last check that passed

    def close_if_health_check_failed(self) -> None:
        # health_check_enabled and health_check_done are set by Django's base wrapper (not in its stubs).
        if self.connection is None or not self.health_check_enabled or self.health_check_done:  # type: ignore[attr-defined,has-type]
            return
        now = time.monotonic()
        if not self.errors_occurred and now - self.checked_at < HEALTH_CHECK_INTERVAL:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
        if self.connection is not None:
            self.checked_at = now

    def connect(self) -> None:
        super().connect()
        self.checked_at = time.monotonic()  # a new connection is as good as checked
