"""Whether a service the tests can use (PostgreSQL, Redis) listens: tests that need it skip otherwise."""

from __future__ import annotations

import socket


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
